"""File routes over the data directory (API-5)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from app.api.files import MAX_FILE_BYTES

ONE_MIB = 1024 * 1024


@pytest.fixture
def data(settings) -> Path:
    root = settings.data_path
    (root / "notes").mkdir(parents=True)
    (root / "notes" / "b.txt").write_text("bee\n")
    (root / "notes" / "A.md").write_text("# a\n")
    (root / "notes" / "sub").mkdir()
    (root / "builds" / "build-demo").mkdir(parents=True)
    return root


def explore(client, headers, path: str | None = None):
    query = {} if path is None else {"path": path}
    return client.get("/v1/system/explorer", query_string=query, headers=headers)


def read(client, headers, path: str):
    return client.get("/v1/system/read", query_string={"path": path}, headers=headers)


def save(client, headers, path: str, content: str = "x"):
    return client.post(
        "/v1/system/save", json={"path": path, "content": content}, headers=headers
    )


# Explorer -----------------------------------------------------------------------------


def test_explorer_lists_directories_first_then_names_ignoring_case(
    client, auth_headers, data
):
    response = explore(client, auth_headers, "notes")

    assert response.status_code == 200
    assert response.get_json() == {
        "items": [
            {"name": "sub", "is_dir": True, "ext": ""},
            {"name": "A.md", "is_dir": False, "ext": ".md"},
            {"name": "b.txt", "is_dir": False, "ext": ".txt"},
        ],
        "path": "notes",
    }


def test_explorer_defaults_to_the_data_directory_and_hides_what_it_must(
    client, auth_headers, data
):
    for hidden in (".git", "__pycache__", "node_modules", ".env"):
        (data / hidden).mkdir()
    for database in (
        "orket_persistence.db",
        "x.db-wal",
        "x.db-shm",
        "x.db-journal",
        "y.sqlite",
        "z.sqlite3",
    ):
        (data / database).write_text("")

    response = explore(client, auth_headers)

    assert response.status_code == 200
    assert response.get_json()["path"] == "."
    names = {item["name"] for item in response.get_json()["items"]}
    assert names == {"notes", "builds", "default"}  # default/ holds the log file


def test_explorer_of_a_missing_directory_is_empty(client, auth_headers, data):
    response = explore(client, auth_headers, "nothing/here")

    assert response.status_code == 200
    assert response.get_json() == {"items": [], "path": "nothing/here"}


def test_explorer_of_a_file_is_400(client, auth_headers, data):
    response = explore(client, auth_headers, "notes/b.txt")

    assert response.status_code == 400
    assert response.get_json() == {"detail": "Not a directory"}


def test_explorer_leading_slash_is_relative_to_the_data_directory(
    client, auth_headers, data
):
    response = explore(client, auth_headers, "/notes")

    assert response.status_code == 200
    assert len(response.get_json()["items"]) == 3


def test_explorer_refuses_dot_directories(client, auth_headers, data):
    (data / ".git").mkdir()

    assert explore(client, auth_headers, ".git").get_json() == {
        "detail": "Access denied"
    }


# Confinement (every route) ------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["..", "../etc", "notes/../../x", "notes/..", "a/../b"]
)
def test_dot_dot_is_forbidden_everywhere(client, auth_headers, data, path):
    for response in (
        explore(client, auth_headers, path),
        read(client, auth_headers, path),
        save(client, auth_headers, path),
    ):
        assert response.status_code == 403
        assert response.get_json() == {"detail": "Forbidden"}


def test_a_symlink_out_of_the_data_directory_is_outside_the_boundaries(
    client, auth_headers, data, tmp_path
):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    os.symlink(outside, data / "escape")

    for response in (
        explore(client, auth_headers, "escape"),
        read(client, auth_headers, "escape/secret.txt"),
        save(client, auth_headers, "escape/new.txt"),
    ):
        assert response.status_code == 403
        detail = response.get_json()["detail"]
        assert detail.startswith("Access denied: escape")
        assert detail.endswith(" is outside allowed boundaries.")
        assert str(tmp_path) not in response.get_data(as_text=True)
    assert not (outside / "new.txt").exists()


def test_the_outside_message_names_the_path_as_given(
    client, auth_headers, data, tmp_path
):
    (tmp_path / "outside.txt").write_text("x")
    os.symlink(tmp_path / "outside.txt", data / "link.txt")

    response = read(client, auth_headers, "/link.txt")

    assert response.get_json() == {
        "detail": "Access denied: /link.txt is outside allowed boundaries."
    }


def test_symlinks_inside_the_data_directory_are_followed(client, auth_headers, data):
    os.symlink(data / "notes", data / "alias")

    assert read(client, auth_headers, "alias/b.txt").get_json() == {"content": "bee\n"}
    names = [item["name"] for item in explore(client, auth_headers).get_json()["items"]]
    assert "alias" in names


def test_explorer_hides_links_that_leave_the_data_directory(
    client, auth_headers, data, tmp_path
):
    os.symlink(tmp_path, data / "escape")

    names = [item["name"] for item in explore(client, auth_headers).get_json()["items"]]

    assert "escape" not in names


def test_a_link_to_a_dot_file_is_refused(client, auth_headers, data):
    (data / ".env").write_text("ORKET_API_KEY=x\n")
    os.symlink(data / ".env", data / "innocent.txt")

    response = read(client, auth_headers, "innocent.txt")

    assert response.status_code == 403
    assert response.get_json() == {"detail": "Access denied"}


# Read ---------------------------------------------------------------------------------


def test_read_returns_the_text(client, auth_headers, data):
    (data / "notes" / "u.txt").write_text("grüße\n", encoding="utf-8")

    response = read(client, auth_headers, "notes/u.txt")

    assert response.status_code == 200
    assert response.get_json() == {"content": "grüße\n"}


@pytest.mark.parametrize(
    "name",
    [
        "orket_persistence.db",
        "w.db-wal",
        "s.db-shm",
        "j.db-journal",
        "a.sqlite",
        "b.sqlite3",
        "C.DB",
    ],
)
def test_database_files_are_denied(client, auth_headers, data, name):
    (data / name).write_bytes(b"SQLite format 3\x00")

    for response in (
        read(client, auth_headers, name),
        save(client, auth_headers, name),
    ):
        assert response.status_code == 403
        assert response.get_json() == {"detail": "Access denied"}


@pytest.mark.parametrize("path", [".env", "notes/.hidden", ".git/config", "./.env"])
def test_dot_components_are_denied(client, auth_headers, data, path):
    target = data / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("secret")

    for response in (
        read(client, auth_headers, path),
        save(client, auth_headers, path),
    ):
        assert response.status_code == 403
        assert response.get_json() == {"detail": "Access denied"}
    assert target.read_text() == "secret"


def test_read_of_a_missing_file_is_404(client, auth_headers, data):
    response = read(client, auth_headers, "notes/none.txt")

    assert response.status_code == 404
    assert response.get_json() == {"detail": "File not found"}


def test_read_of_a_directory_is_400(client, auth_headers, data):
    response = read(client, auth_headers, "notes")

    assert response.status_code == 400
    assert response.get_json() == {"detail": "Not a file"}


def test_read_at_one_mebibyte_passes_and_above_is_413(client, auth_headers, data):
    (data / "exact.txt").write_bytes(b"a" * ONE_MIB)
    (data / "over.txt").write_bytes(b"a" * (ONE_MIB + 1))

    assert len(read(client, auth_headers, "exact.txt").get_json()["content"]) == ONE_MIB
    over = read(client, auth_headers, "over.txt")
    assert over.status_code == 413
    assert over.get_json() == {"detail": "File too large"}


def test_read_of_binary_is_415(client, auth_headers, data):
    (data / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")

    response = read(client, auth_headers, "image.png")

    assert response.status_code == 415
    assert response.get_json() == {"detail": "File is not UTF-8 text"}


def test_read_without_a_path_is_422(client, auth_headers, data):
    response = client.get("/v1/system/read", headers=auth_headers)

    assert response.status_code == 422
    assert response.get_json() == {
        "detail": [
            {"loc": ["query", "path"], "msg": "Field required", "type": "missing"}
        ]
    }


# Save ---------------------------------------------------------------------------------


def test_save_creates_parents_writes_and_records_an_event(
    client, auth_headers, data, settings
):
    response = save(
        client, auth_headers, "builds/build-demo/agent_output/new/x.py", "print(1)\n"
    )

    assert response.status_code == 200
    assert response.get_json() == {"ok": True}
    written = data / "builds/build-demo/agent_output/new/x.py"
    assert written.read_text() == "print(1)\n"
    line = json.loads(settings.log_file.read_text().splitlines()[-1])
    assert line["event"] == "file_saved"
    assert line["data"] == {
        "path": "builds/build-demo/agent_output/new/x.py",
        "bytes": 9,
    }


def test_save_replaces_a_file_atomically_without_leftovers(client, auth_headers, data):
    target = data / "notes" / "b.txt"
    os.chmod(target, 0o600)

    assert save(client, auth_headers, "notes/b.txt", "new").status_code == 200

    assert target.read_text() == "new"
    assert oct(target.stat().st_mode & 0o777) == oct(0o600)
    assert sorted(p.name for p in (data / "notes").iterdir()) == [
        "A.md",
        "b.txt",
        "sub",
    ]


def test_a_failed_write_leaves_the_old_content(client, auth_headers, data, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise PermissionError(13, "denied")

    monkeypatch.setattr("app.api.files.os.replace", refuse)

    response = save(client, auth_headers, "notes/b.txt", "new")

    assert response.status_code == 403
    assert (data / "notes" / "b.txt").read_text() == "bee\n"
    assert sorted(p.name for p in (data / "notes").iterdir()) == [
        "A.md",
        "b.txt",
        "sub",
    ]


@pytest.mark.parametrize(
    "path",
    [
        "verification/demo/calc_fixture.py",
        "Verification/new.py",
        "sandboxes/sandbox-x/docker-compose.yml",
        "run/gunicorn-api.ctl",
        "default/orket.log",
        "default/orket.log.3",
        "notes/other.LOG",
    ],
)
def test_save_refuses_fixtures_sandboxes_control_sockets_and_logs(
    client, auth_headers, data, path
):
    response = save(client, auth_headers, path, "x")

    assert response.status_code == 403
    assert response.get_json() == {"detail": "Access denied"}
    assert not (data / path).exists()


def test_save_refuses_the_verification_folder_through_a_link(
    client, auth_headers, data
):
    (data / "verification").mkdir()
    os.symlink(data / "verification", data / "fixtures")

    response = save(client, auth_headers, "fixtures/evil.py", "x")

    assert response.status_code == 403
    assert not (data / "verification" / "evil.py").exists()


def test_save_content_limit_is_one_mebibyte(client, auth_headers, data):
    exact = save(client, auth_headers, "notes/exact.txt", "a" * MAX_FILE_BYTES)
    over = save(client, auth_headers, "notes/over.txt", "a" * (MAX_FILE_BYTES + 1))
    # Multi-byte characters count as bytes: 524,289 × 2 bytes is over the limit.
    wide = save(client, auth_headers, "notes/wide.txt", "é" * (MAX_FILE_BYTES // 2 + 1))

    assert exact.status_code == 200
    assert over.status_code == 413
    assert over.get_json() == {"detail": "Content too large"}
    assert wide.status_code == 413
    assert not (data / "notes" / "over.txt").exists()


@pytest.mark.parametrize(
    "body, loc",
    [({"content": "x"}, ["body", "path"]), ({"path": "a.txt"}, ["body", "content"])],
)
def test_save_validates_its_body(client, auth_headers, data, body, loc):
    response = client.post("/v1/system/save", json=body, headers=auth_headers)

    assert response.status_code == 422
    assert response.get_json()["detail"][0]["loc"] == loc


def test_save_over_a_directory_is_refused(client, auth_headers, data):
    response = save(client, auth_headers, "notes/sub", "x")

    assert response.status_code == 400
    assert (data / "notes" / "sub").is_dir()


def test_save_of_the_root_is_refused(client, auth_headers, data):
    assert save(client, auth_headers, "/", "x").status_code == 403


def test_an_absolute_path_stays_inside_the_data_directory(client, auth_headers, data):
    (data / "etc").mkdir()
    (data / "etc" / "passwd").write_text("inside\n")

    assert read(client, auth_headers, "/etc/passwd").get_json() == {
        "content": "inside\n"
    }
    assert read(client, auth_headers, "/etc/hostname").status_code == 404
    assert explore(client, auth_headers, "/").get_json()["path"] == "/"
