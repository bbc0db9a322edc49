"""Sandbox ids and compose project names (SPEC SBX-1).

An id is `sandbox-` plus its key, lower-cased and stripped to `[a-z0-9_-]`. When
that changes the key, eight hex characters of the key's SHA-256 are appended, so
two keys that clean to the same text (`a.b` and `ab`) still get different ids.
"""

from __future__ import annotations

import hashlib
import re

ID_PREFIX = "sandbox-"
PROJECT_PREFIX = "orket-"
MAX_ID_LENGTH = 100  # `sandboxes.id` is VARCHAR(100)
HASH_LENGTH = 8

_UNSAFE = re.compile(r"[^a-z0-9_-]")
_VALID_ID = re.compile(r"^sandbox-[a-z0-9_-]+$")


def sandbox_id_for_key(key: str) -> str:
    """The sandbox id of `key` (SBX-1)."""
    cleaned = _UNSAFE.sub("", key.lower())
    if cleaned == key and len(ID_PREFIX) + len(cleaned) <= MAX_ID_LENGTH:
        return ID_PREFIX + cleaned
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:HASH_LENGTH]
    room = MAX_ID_LENGTH - len(ID_PREFIX) - 1 - HASH_LENGTH
    return f"{ID_PREFIX}{cleaned[:room]}-{digest}"


def pr_sandbox_key(repo_full_name: str, pr_number: int) -> str:
    """`<repository name>-pr<n>`: the key of a PR sandbox, also its bug-fix rock id."""
    name = repo_full_name.rstrip("/").rsplit("/", 1)[-1]
    return f"{name}-pr{pr_number}"


def pr_sandbox_id(repo_full_name: str, pr_number: int) -> str:
    return sandbox_id_for_key(pr_sandbox_key(repo_full_name, pr_number))


def compose_project_for(sandbox_id: str) -> str:
    return PROJECT_PREFIX + sandbox_id


def is_valid_sandbox_id(value: str) -> bool:
    """True for ids this module could have made; only those name a directory."""
    return len(value) <= MAX_ID_LENGTH and bool(_VALID_ID.match(value))
