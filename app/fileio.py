"""Atomic file writes shared by the API's save route and the agents' tools."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

NEW_FILE_MODE = 0o644


def atomic_write(path: Path, data: bytes, *, durable: bool = False) -> None:
    """Write through a temporary file in the same folder, then rename over `path`.

    Parents are created; an existing file keeps its permission bits, a new one gets
    NEW_FILE_MODE. `durable` fsyncs before the rename.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = NEW_FILE_MODE
    handle, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
