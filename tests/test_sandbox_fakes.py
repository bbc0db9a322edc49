"""Stand-in `docker`, `docker-compose` and `git` executables for the sandbox tests,
and helpers the sandbox test modules share.

No test here: each sandbox test module builds a `FakeTools` in a fixture. The real
Docker engine is not available on test machines, so the stand-ins (small Python
scripts in a temporary bin directory that becomes the whole `PATH`) record every
call with its arguments, working directory and environment, and answer like
Compose v2 would. What they answer is steered by a JSON file:

- `daemon` (true): false makes `docker info` and Compose fail as without a daemon
- `compose_v2` (true): false makes `docker compose` an unknown command
- `up` / `down` / `logs` / `clone`: `{"exit": n, "stderr": text, "sleep": s}`
- `ps_form` ("lines"): "array" for the JSON array of Compose < 2.21
- `states`: service → container state (default "running"); `health` likewise
- `head`: what `git rev-parse HEAD` prints
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

DOCKER_SCRIPT = r"""
import json, os, re, sys, time
from pathlib import Path

STATE = Path(__STATE__)


def behaviour():
    path = STATE / "behaviour.json"
    return json.loads(path.read_text()) if path.exists() else {}


def record(tool, argv):
    entry = {"tool": tool, "argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}
    with open(STATE / "calls.jsonl", "a") as handle:
        handle.write(json.dumps(entry) + "\n")


def finish(step):
    plan = behaviour().get(step) or {}
    time.sleep(plan.get("sleep", 0))
    if plan.get("stderr"):
        sys.stderr.write(plan["stderr"] + "\n")
    sys.exit(plan.get("exit", 0))


def no_daemon():
    sys.stderr.write(
        "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
        "Is the docker daemon running?\n"
    )
    sys.exit(1)


def services(compose_file):
    names, inside = [], False
    for line in Path(compose_file).read_text().splitlines():
        if line == "services:":
            inside = True
        elif inside and re.match(r"^  [A-Za-z0-9_.-]+:$", line):
            names.append(line.strip().rstrip(":"))
        elif inside and line and not line.startswith(" "):
            inside = False
    return names


def containers(project, compose_file):
    plan = behaviour()
    states, health = plan.get("states", {}), plan.get("health", {})
    found = []
    for number, name in enumerate(services(compose_file)):
        state = states.get(name, "running")
        if state == "absent":
            continue
        found.append({
            "ID": f"c{number:011d}",
            "Name": f"{project}-{name}-1",
            "Project": project,
            "Service": name,
            "State": state,
            "Health": health.get(name, ""),
        })
    return found


def compose(args):
    if args[:1] == ["version"]:
        print("Docker Compose version v2.29.1")
        sys.exit(0)
    if not behaviour().get("daemon", True):
        no_daemon()
    project, compose_file = None, None
    while args and args[0] in ("-p", "-f"):
        if args[0] == "-p":
            project = args[1]
        else:
            compose_file = args[1]
        args = args[2:]
    command = args[0]
    if command == "ps":
        found = containers(project, compose_file)
        if "-q" in args:
            print("\n".join(item["ID"] for item in found))
        elif behaviour().get("ps_form", "lines") == "array":
            print(json.dumps(found))
        else:
            print("\n".join(json.dumps(item) for item in found))
        sys.exit(0)
    if command == "logs":
        wanted = [arg for arg in args[1:] if not arg.startswith("-")]
        leak = behaviour().get("leak", "")
        for name in wanted or services(compose_file):
            print(f"{name}-1  | started {name} with password {leak}")
    finish(command)


def main():
    tool = os.path.basename(sys.argv[0])
    argv = sys.argv[1:]
    record(tool, argv)
    if tool == "docker-compose":
        compose(argv)
    if argv[:1] == ["info"]:
        if not behaviour().get("daemon", True):
            no_daemon()
        print("27.1.1")
        sys.exit(0)
    if argv[:1] == ["compose"]:
        if not behaviour().get("compose_v2", True):
            sys.stderr.write("docker: 'compose' is not a docker command.\n")
            sys.exit(1)
        compose(argv[1:])
    if argv[:1] == ["inspect"]:
        states = behaviour().get("v1_inspect", [])
        print(json.dumps(states))
        sys.exit(0)
    sys.exit(64)


main()
"""

GIT_SCRIPT = r"""
import json, os, sys, time
from pathlib import Path

STATE = Path(__STATE__)


def behaviour():
    path = STATE / "behaviour.json"
    return json.loads(path.read_text()) if path.exists() else {}


argv = sys.argv[1:]
with open(STATE / "calls.jsonl", "a") as handle:
    entry = {"tool": "git", "argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}
    handle.write(json.dumps(entry) + "\n")

rest, cwd = list(argv), Path.cwd()
while rest and rest[0] in ("-c", "-C"):
    if rest[0] == "-C":
        cwd = cwd / rest[1]
    rest = rest[2:]
command = rest[0]
plan = behaviour().get(command) or {}
time.sleep(plan.get("sleep", 0))
if plan.get("exit"):
    sys.stderr.write(plan.get("stderr", "fatal: failed") + "\n")
    sys.exit(plan["exit"])
if command == "clone":
    target = cwd / rest[-1]
    for part in ("backend", "frontend"):
        (target / part).mkdir(parents=True)
        (target / part / "Dockerfile").write_text("FROM scratch\n")
elif command == "rev-parse":
    print(behaviour().get("head", "0" * 40))
sys.exit(0)
"""


class FakeTools:
    """A bin directory with the stand-ins, its call log and its behaviour file."""

    def __init__(self, root: Path) -> None:
        self.bin = root / "bin"
        self.state = root / "state"
        self.bin.mkdir(parents=True)
        self.state.mkdir()
        self._write("docker", DOCKER_SCRIPT)
        self._write("git", GIT_SCRIPT)
        self.behaviour: dict[str, Any] = {}

    def _write(self, name: str, body: str) -> None:
        script = self.bin / name
        source = body.replace("__STATE__", repr(str(self.state)))
        script.write_text(f"#!{sys.executable}\n{source}")
        script.chmod(0o755)

    def behave(self, **changes: Any) -> None:
        self.behaviour.update(changes)
        (self.state / "behaviour.json").write_text(json.dumps(self.behaviour))

    def add_compose_v1(self) -> None:
        """A `docker-compose` (v1) next to a `docker` without the compose plugin."""
        self._write("docker-compose", DOCKER_SCRIPT)
        self.behave(compose_v2=False)

    def remove_docker(self) -> None:
        (self.bin / "docker").unlink()

    def restore_docker(self) -> None:
        self._write("docker", DOCKER_SCRIPT)

    def calls(self, tool: str | None = None) -> list[dict[str, Any]]:
        log = self.state / "calls.jsonl"
        if not log.exists():
            return []
        entries = [json.loads(line) for line in log.read_text().splitlines()]
        return [entry for entry in entries if tool is None or entry["tool"] == tool]

    def compose_calls(self, command: str) -> list[list[str]]:
        """Argument lists of Compose calls running `command` (v2 or v1)."""
        found = []
        for entry in self.calls():
            argv = entry["argv"]
            if entry["tool"] == "docker" and argv[:1] == ["compose"]:
                argv = argv[1:]
            elif entry["tool"] != "docker-compose":
                continue
            rest = argv
            while rest and rest[0] in ("-p", "-f"):
                rest = rest[2:]
            if rest[:1] == [command]:
                found.append([entry["tool"], *entry["argv"]])
        return found

    def clear_calls(self) -> None:
        (self.state / "calls.jsonl").unlink(missing_ok=True)


def install_fake_tools(root: Path, monkeypatch: Any) -> FakeTools:
    """The stand-ins alone on `PATH` (so no real docker is found), with `LANG` set."""
    tools = FakeTools(root)
    monkeypatch.setenv("PATH", str(tools.bin))
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("HOME", str(root))
    for name in list(os.environ):
        if name.startswith("DOCKER_"):
            monkeypatch.delenv(name)
    return tools


# Shared helpers of the sandbox test modules ----------------------------------------

GITEA_URL = "http://127.0.0.1:3000"
GITEA_TOKEN = "gitea-bot-token-5f2a"
MERGE_SHA = "9f1c2d3e4b5a69788796a5b4c3d2e1f0a9b8c7d6"
SANDBOX_ID = "sandbox-widgets-pr7"
DEPLOY_PARAMS = {
    "tech_stack": "fastapi-react-postgres",
    "clone_url": f"{GITEA_URL}/acme/widgets.git",
    "commit_sha": MERGE_SHA,
    "repo_full_name": "acme/widgets",
    "pr_number": 7,
    "rock_id": "widgets-pr7",
}


def free_port_block(size: int) -> tuple[int, int]:
    """`size` consecutive ports that can all be bound now."""
    from app.sandbox.ports import port_is_bindable

    for start in range(21000 + os.getpid() % 500 * 40, 64000, size + 3):
        if all(port_is_bindable(port) for port in range(start, start + size)):
            return start, start + size - 1
    raise RuntimeError("no block of free ports")


def sandbox_settings(port_range: tuple[int, int], **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "sandbox_port_range": f"{port_range[0]}-{port_range[1]}",
        "sandbox_public_host": "sbx.test",
        "gitea_url": GITEA_URL,
        "gitea_token": GITEA_TOKEN,
        "sandbox_timeout_sec": 30.0,
    }
    values.update(overrides)
    return values


def run_job(
    services: Any, kind: str, sandbox_id: str = SANDBOX_ID, **params: Any
) -> tuple[str, str]:
    """Queue a sandbox job and execute it as the job runner would: (status, job id)."""
    from app.sandbox import enqueue_sandbox_job, execute_sandbox_job

    if kind == "sandbox_deploy":
        params = {**DEPLOY_PARAMS, **params}
    job = enqueue_sandbox_job(
        services.runtime_db,
        services.events,
        kind=kind,
        sandbox_id=sandbox_id,
        params=params,
        source="webhook",
    )
    return execute_sandbox_job(services, job["session_id"]), job["session_id"]


def sandbox_row(services: Any, sandbox_id: str = SANDBOX_ID) -> Any:
    from app.models.runtime import Sandbox

    with services.runtime_db.reader() as session:
        return session.get(Sandbox, sandbox_id)


def events_named(services: Any, name: str) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from app.models.runtime import Event

    with services.runtime_db.reader() as session:
        rows = session.scalars(
            select(Event).where(Event.event == name).order_by(Event.id)
        )
        return [json.loads(row.data) for row in rows]


def env_secrets(services: Any, sandbox_id: str = SANDBOX_ID) -> dict[str, str]:
    """The generated passwords of a deployed sandbox, from its `.env`."""
    path = services.settings.sandboxes_root / sandbox_id / ".env"
    pairs = (line.split("=", 1) for line in path.read_text().splitlines())
    return dict(pairs)
