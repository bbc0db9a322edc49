"""File routes over the data directory (API-5): explorer, read, save.

A user path is relative to the data directory (a leading `/` is dropped), may not
contain `..`, and is resolved with symlinks before it is checked to stay inside the
root, so neither an absolute path nor a link can reach anything outside. Dot
components and database files are never listed, read or written; saving into
`verification/`, `sandboxes/`, `run/` or a log file is refused as well.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from flask import Response, jsonify

from app.api import schemas
from app.api.blueprint import v1
from app.api.errors import ApiError
from app.api.openapi import route
from app.api.validation import parse_body, parse_query
from app.fileio import atomic_write
from app.services import current_services

MAX_FILE_BYTES = 1024 * 1024
DATABASE_SUFFIXES = (".db", ".db-wal", ".db-shm", ".db-journal", ".sqlite", ".sqlite3")
HIDDEN_NAMES = frozenset({"__pycache__", "node_modules"})
READ_ONLY_TOP_DIRS = frozenset({"verification", "sandboxes", "run"})
LOG_FILE = re.compile(r".*\.log(\.\d+)?$", re.IGNORECASE)


@dataclass(frozen=True)
class Target:
    """A user path resolved inside the root."""

    given: str
    path: Path  # resolved, absolute
    relative: PurePosixPath  # to the root; `.` for the root itself


def is_database_file(name: str) -> bool:
    return name.lower().endswith(DATABASE_SUFFIXES)


def _is_dot_name(name: str) -> bool:
    return name.startswith(".") and name != "."


def resolve_user_path(root: Path, given: str) -> Target:
    """Confine `given` to `root`: `..` → 403 Forbidden, escapes → 403 with the path."""
    relative = given.lstrip("/")
    parts = PurePosixPath(relative).parts if relative else ()
    if ".." in parts:
        raise ApiError(403, "Forbidden")
    if "\x00" in relative:
        raise ApiError(403, "Forbidden")
    try:
        resolved = (root / relative).resolve()
    except (OSError, RuntimeError):  # a symlink loop
        raise ApiError(403, "Access denied") from None
    if not resolved.is_relative_to(root):
        raise ApiError(403, f"Access denied: {given} is outside allowed boundaries.")
    inside = PurePosixPath(resolved.relative_to(root).as_posix())
    target = Target(given, resolved, inside)
    if _names_hidden_entry(parts) or _names_hidden_entry(inside.parts):
        raise ApiError(403, "Access denied")
    return target


def _names_hidden_entry(parts: tuple[str, ...]) -> bool:
    """A dot component anywhere, or a database file at the end."""
    if any(_is_dot_name(part) for part in parts):
        return True
    return bool(parts) and is_database_file(parts[-1])


def _refuses_writes(target: Target) -> bool:
    parts = target.relative.parts
    if not parts or parts == (".",):
        return True
    if parts[0].lower() in READ_ONLY_TOP_DIRS:
        return True
    return bool(LOG_FILE.match(parts[-1]))


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long for the file system, and the like
        raise ApiError(400, "Invalid path") from None


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # a name too long for the file system, and the like
        raise ApiError(400, "Invalid path") from None


def _root() -> Path:
    return current_services().settings.data_path


# Explorer -----------------------------------------------------------------------------


def _listed(entry: os.DirEntry[str], root: Path) -> bool:
    if _is_dot_name(entry.name) or entry.name in HIDDEN_NAMES:
        return False
    if is_database_file(entry.name):
        return False
    if entry.is_symlink():
        try:
            return Path(entry.path).resolve().is_relative_to(root)
        except (OSError, RuntimeError):
            return False
    return True


def _item(entry: os.DirEntry[str]) -> dict[str, object]:
    is_dir = entry.is_dir()
    return {
        "name": entry.name,
        "is_dir": is_dir,
        "ext": "" if is_dir else os.path.splitext(entry.name)[1],
    }


def list_directory(root: Path, target: Target) -> list[dict[str, object]]:
    """Visible entries: directories first, then names ignoring case."""
    try:
        with os.scandir(target.path) as entries:
            items = [_item(entry) for entry in entries if _listed(entry, root)]
    except PermissionError:
        raise ApiError(403, "Access denied") from None
    return sorted(
        items, key=lambda item: (not item["is_dir"], str(item["name"]).lower())
    )


@route(
    v1,
    "/system/explorer",
    "GET",
    "List a directory of the data directory",
    response=schemas.ExplorerOut,
    query=schemas.ExplorerQuery,
    errors=(400,),
)
def explorer() -> Response:
    query = parse_query(schemas.ExplorerQuery)
    root = _root()
    target = resolve_user_path(root, query.path)

    if not _exists(target.path):
        return jsonify({"items": [], "path": query.path})
    if not _is_dir(target.path):
        raise ApiError(400, "Not a directory")
    return jsonify({"items": list_directory(root, target), "path": query.path})


# Read ---------------------------------------------------------------------------------


@route(
    v1,
    "/system/read",
    "GET",
    "Read a UTF-8 text file of the data directory",
    response=schemas.ReadOut,
    query=schemas.ReadQuery,
    errors=(400, 404, 413, 415),
)
def read_file() -> Response:
    query = parse_query(schemas.ReadQuery)
    target = resolve_user_path(_root(), query.path)

    # Log files hold tracebacks and host paths for operators; no response may (SEC-6).
    if target.relative.parts and LOG_FILE.match(target.relative.parts[-1]):
        raise ApiError(403, "Access denied")
    if _is_dir(target.path):
        raise ApiError(400, "Not a file")
    try:
        with open(target.path, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ApiError(404, "File not found") from None
    except (PermissionError, IsADirectoryError):
        raise ApiError(403, "Access denied") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ApiError(413, "File too large")
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(415, "File is not UTF-8 text") from None
    return jsonify({"content": content})


# Save ---------------------------------------------------------------------------------


@route(
    v1,
    "/system/save",
    "POST",
    "Write a text file of the data directory",
    response=schemas.OkOut,
    body=schemas.SaveBody,
    errors=(400, 413),
)
def save_file() -> Response:
    body = parse_body(schemas.SaveBody)
    data = body.content.encode("utf-8")
    if len(data) > MAX_FILE_BYTES:
        raise ApiError(413, "Content too large")
    services = current_services()
    target = resolve_user_path(services.settings.data_path, body.path)

    if _refuses_writes(target):
        raise ApiError(403, "Access denied")
    if _is_dir(target.path):
        raise ApiError(400, "Not a file")
    try:
        atomic_write(target.path, data, durable=True)
    except PermissionError:
        raise ApiError(403, "Access denied") from None
    except (NotADirectoryError, FileExistsError):  # a parent is a file
        raise ApiError(400, "Not a directory") from None
    except OSError:  # a name too long for the file system, and the like
        raise ApiError(400, "Invalid path") from None

    services.events.emit(
        "file_saved", {"path": target.relative.as_posix(), "bytes": len(data)}
    )
    return jsonify({"ok": True})
