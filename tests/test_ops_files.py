"""The Docker image files, checked by parsing them (no Docker engine runs here).

Dockerfile directives, the non-root user, the health check, `.dockerignore`, the
compose services and profiles, and the entrypoint script's behaviour with a stand-in
`python` on PATH.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT_ROOT

DOCKERFILE = PROJECT_ROOT / "Dockerfile"
ENTRYPOINT = PROJECT_ROOT / "scripts" / "docker-entrypoint.sh"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    pairs = []
    for line in joined:
        instruction, _, arguments = line.partition(" ")
        pairs.append((instruction.upper(), arguments.strip()))
    return pairs


def arguments_of(instruction: str) -> list[str]:
    return [args for name, args in dockerfile_instructions() if name == instruction]


def env_values() -> dict[str, str]:
    values: dict[str, str] = {}
    for args in arguments_of("ENV"):
        for name, value in re.findall(r"(\w+)=(\S+)", args):
            values[name] = value
    return values


def dockerignore_patterns() -> list[str]:
    lines = (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def docker_pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker reads it: `*` stays inside one directory."""
    parts = []
    for token in re.split(r"(\*\*/|\*\*|\*|\?)", pattern.strip("/")):
        if token == "**/":
            parts.append("(?:.*/)?")
        elif token == "**":
            parts.append(".*")
        elif token == "*":
            parts.append("[^/]*")
        elif token == "?":
            parts.append("[^/]")
        else:
            parts.append(re.escape(token))
    return re.compile("".join(parts))


def ignored_by_docker(path: str) -> bool:
    """True when the path, or a directory above it, matches a pattern."""
    pieces = path.split("/")
    candidates = ["/".join(pieces[: n + 1]) for n in range(len(pieces))]
    return any(
        docker_pattern(pattern).fullmatch(candidate)
        for pattern in dockerignore_patterns()
        for candidate in candidates
    )


def compose() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())


# Dockerfile ---------------------------------------------------------------------


def test_image_builds_from_python_312_slim() -> None:
    instructions = dockerfile_instructions()

    assert instructions[0] == ("FROM", "python:3.12-slim")
    assert [name for name, _ in instructions].count("FROM") == 1


def test_image_runs_as_orket_uid_10001_after_preparing_the_data_volume() -> None:
    instructions = dockerfile_instructions()
    names = [name for name, _ in instructions]
    runs = " ".join(arguments_of("RUN"))

    assert re.search(r"useradd\b.*--uid 10001\b.*\borket\b", runs)
    assert re.search(r"groupadd\b.*--gid 10001\b.*\borket\b", runs)
    assert arguments_of("USER") == ["orket"]
    chown_at = next(
        i
        for i, (name, args) in enumerate(instructions)
        if name == "RUN" and "chown orket:orket /data" in args
    )
    assert chown_at < names.index("VOLUME") < names.index("USER") < names.index("CMD")
    assert arguments_of("VOLUME") == ['["/data"]']


def test_code_is_copied_before_the_user_switch_and_made_read_only() -> None:
    instructions = dockerfile_instructions()
    user_at = [name for name, _ in instructions].index("USER")
    copies = [i for i, (name, _) in enumerate(instructions) if name == "COPY"]

    assert copies and max(copies) < user_at
    assert not any("--chown" in args for args in arguments_of("COPY"))
    assert any("chmod -R go-w /app" in args for args in arguments_of("RUN"))


def test_every_copied_path_exists_and_is_not_docker_ignored() -> None:
    for args in arguments_of("COPY"):
        sources = args.split()[:-1]
        for source in sources:
            assert (PROJECT_ROOT / source).exists(), source
            assert not ignored_by_docker(source), (
                f"{source} is excluded by .dockerignore"
            )


def test_environment_points_at_the_data_volume_and_binds_all_interfaces() -> None:
    env = env_values()

    assert env["ORKET_DATA_DIR"] == "/data"
    assert env["ORKET_HOST"] == "0.0.0.0"
    assert env["ORKET_WEBHOOK_HOST"] == "0.0.0.0"
    assert env["ORKET_PORT"] == "8082"
    assert "ORKET_API_KEY" not in env and "GITEA_WEBHOOK_SECRET" not in env


def test_both_ports_are_exposed() -> None:
    assert arguments_of("EXPOSE") == ["8082 8080"]


def test_healthcheck_probes_api_health_with_python_urllib() -> None:
    (healthcheck,) = arguments_of("HEALTHCHECK")

    assert "--interval=30s" in healthcheck
    assert "--timeout=5s" in healthcheck
    assert "--retries=3" in healthcheck
    assert "urllib.request" in healthcheck
    assert "http://127.0.0.1:${ORKET_PORT}/health" in healthcheck
    assert "curl" not in healthcheck and "wget" not in healthcheck


def test_command_is_the_entrypoint_script_serving_the_api() -> None:
    assert arguments_of("CMD") == ['["/app/scripts/docker-entrypoint.sh", "api"]']
    assert os.access(ENTRYPOINT, os.X_OK)


def test_no_docker_cli_is_installed_in_the_image() -> None:
    runs = " ".join(arguments_of("RUN"))

    assert "docker" not in runs.replace("docker-entrypoint", "")


# .dockerignore ------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        ".git/config",
        ".env",
        "workspace/orket_persistence.db",
        "data.db",
        "app/data.db",
        "server.log",
        "app/nested/debug.log.1",
        "workspace/default/orket.log",
        ".smoke/data/webhook.db",
        "benchmarks/results/20260101T000000Z_load.json",
        "app/__pycache__/config.cpython-312.pyc",
        ".pytest_cache/v/cache",
        ".mypy_cache/3.12/app",
        ".ruff_cache/content",
        ".venv/bin/python",
        "orket_runtime.egg-info/PKG-INFO",
    ],
)
def test_dockerignore_keeps_secrets_data_and_caches_out(path: str) -> None:
    assert ignored_by_docker(path)


def test_dockerignore_keeps_what_the_image_needs() -> None:
    for path in ("app/config.py", "migrations/runtime/env.py", "alembic.ini"):
        assert not ignored_by_docker(path)


# docker-compose.yml ----------------------------------------------------------------


def test_compose_runs_migrate_once_then_api_and_webhook() -> None:
    services = compose()["services"]

    assert services["migrate"]["command"][-1] == "migrate"
    assert services["migrate"]["restart"] == "no"
    for name, role in (("api", "api"), ("webhook", "webhook")):
        service = services[name]
        assert service["command"][-1] == role
        assert service["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }
        assert service["environment"]["ORKET_SKIP_MIGRATE"] == "1"


def test_compose_services_share_one_data_volume_from_the_same_image() -> None:
    document = compose()
    services = document["services"]

    for name in ("migrate", "api", "webhook"):
        assert services[name]["image"] == "orket:latest"
        assert "orket-data:/data" in services[name]["volumes"]
    assert "orket-data" in document["volumes"]


def test_compose_publishes_ports_on_loopback_only() -> None:
    published = [
        port
        for service in compose()["services"].values()
        for port in service.get("ports", [])
    ]

    assert published
    assert all(str(port).startswith("127.0.0.1:") for port in published)
    assert "127.0.0.1:8082:8082" in compose()["services"]["api"]["ports"]
    assert "127.0.0.1:8080:8080" in compose()["services"]["webhook"]["ports"]


def test_compose_webhook_health_check_probes_port_8080() -> None:
    test = " ".join(compose()["services"]["webhook"]["healthcheck"]["test"])

    assert "http://127.0.0.1:8080/health" in test


def test_compose_profiles_take_passwords_from_the_environment() -> None:
    services = compose()["services"]

    assert services["postgres"]["profiles"] == ["postgres"]
    assert services["gitea"]["profiles"] == ["gitea"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith(
        "${POSTGRES_PASSWORD"
    )
    assert services["gitea-admin"]["environment"]["GITEA_ADMIN_PASSWORD"].startswith(
        "${GITEA_ADMIN_PASSWORD"
    )
    for name in ("migrate", "api", "webhook"):
        assert "profiles" not in services[name]


def test_compose_postgres_init_script_creates_the_webhook_database() -> None:
    volumes = compose()["services"]["postgres"]["volumes"]
    init = next(v for v in volumes if "docker-entrypoint-initdb.d" in v)
    script = PROJECT_ROOT / init.split(":")[0]

    assert "CREATE DATABASE orket_webhook" in script.read_text()


# Entrypoint -----------------------------------------------------------------------


@pytest.fixture
def fake_python(tmp_path: Path) -> tuple[Path, Path]:
    """A `python` that records its arguments instead of migrating or serving."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    script = bin_dir / "python"
    script.write_text(f'#!/bin/sh\necho "$*" >> "{calls}"\n')
    script.chmod(0o755)
    return bin_dir, calls


def run_entrypoint(
    fake_python: tuple[Path, Path], *args: str, **env: str
) -> tuple[int, list[str]]:
    bin_dir, calls = fake_python
    environ = {"PATH": f"{bin_dir}:/usr/bin:/bin", **env}
    result = subprocess.run(
        ["sh", str(ENTRYPOINT), *args], env=environ, capture_output=True, timeout=10
    )
    lines = calls.read_text().splitlines() if calls.exists() else []
    return result.returncode, lines


MIGRATE = "-m flask --app wsgi orket migrate"


def test_entrypoint_migrates_then_serves_the_api(fake_python) -> None:
    code, calls = run_entrypoint(fake_python)

    assert code == 0
    assert calls == [MIGRATE, "-m gunicorn -c python:app.serving.gunicorn_api"]


def test_entrypoint_skips_migrate_when_told(fake_python) -> None:
    code, calls = run_entrypoint(fake_python, "webhook", ORKET_SKIP_MIGRATE="1")

    assert code == 0
    assert calls == ["-m gunicorn -c python:app.serving.gunicorn_webhook"]


def test_entrypoint_migrate_role_only_migrates(fake_python) -> None:
    code, calls = run_entrypoint(fake_python, "migrate", ORKET_SKIP_MIGRATE="1")

    assert code == 0
    assert calls == [MIGRATE]


def test_entrypoint_refuses_an_unknown_role(fake_python) -> None:
    code, calls = run_entrypoint(fake_python, "shell")

    assert code == 2
    assert calls == []


def test_entrypoint_does_not_serve_when_migrate_fails(fake_python) -> None:
    bin_dir, calls = fake_python
    (bin_dir / "python").write_text(
        f'#!/bin/sh\necho "$*" >> "{calls}"\ncase "$*" in *migrate*) exit 1;; esac\n'
    )

    code, lines = run_entrypoint(fake_python, "api")

    assert code == 1
    assert lines == [MIGRATE]
