"""A build's workspace on disk: confined paths and safe writes (ENG-9).

Every agent path is taken relative to `<data>/builds/<build>/` and resolved with
symlinks followed; the result must stay inside the resolved workspace. Writes go to a
temporary file in the target's directory and are renamed into place under a per-path
lock, so readers and concurrent writers never see a torn file.
"""

from __future__ import annotations

import threading
from pathlib import Path, PurePosixPath

from app.fileio import atomic_write as write_file_atomically

_path_locks: dict[Path, threading.Lock] = {}
_path_locks_guard = threading.Lock()


class OutsideWorkspace(ValueError):
    """The path resolves outside the workspace."""


def workspace_for(builds_root: Path, build_id: str) -> Path:
    """`<builds>/<build id>`; refuses ids that would name a folder outside it."""
    workspace = builds_root / build_id
    if (
        build_id in ("", ".", "..")
        or workspace.resolve().parent != builds_root.resolve()
    ):
        raise OutsideWorkspace(f"Build id {build_id!r} does not name a build folder")
    return workspace


def resolve_inside(root: Path, relative: str) -> Path:
    """The real path of `relative` under `root`; raises OutsideWorkspace."""
    base = root.resolve()
    try:
        candidate = (base / relative).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # loops, NUL bytes
        raise OutsideWorkspace(relative) from exc
    if candidate != base and not candidate.is_relative_to(base):
        raise OutsideWorkspace(relative)
    return candidate


def first_component(relative: str) -> str:
    """The first path component of an agent path, lower-cased (`./A/b` → `a`)."""
    parts = [
        part
        for part in PurePosixPath(relative.replace("\\", "/")).parts
        if part not in ("/", ".")
    ]
    return parts[0].lower() if parts else ""


def _lock_for(path: Path) -> threading.Lock:
    with _path_locks_guard:
        lock = _path_locks.get(path)
        if lock is None:
            lock = _path_locks[path] = threading.Lock()
        return lock


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` atomically, one writer per path at a time."""
    with _lock_for(path):
        write_file_atomically(path, data)
