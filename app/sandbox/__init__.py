"""Docker Compose sandboxes of merged pull requests (SPEC §10).

A merged PR queues a `sandbox_deploy` job; the API process runs it: the merge
commit is cloned, started with `docker compose`, given ports from
`ORKET_SANDBOX_PORT_RANGE`, and announced on the PR. The `sandboxes` table is the
registry both processes share. Modules:

- `identity`: ids and compose project names (SBX-1)
- `stacks`: compose templates and generated passwords (SBX-1)
- `ports`: port allocation and release (SBX-3)
- `commands`: `docker`/`git` subprocesses with a minimal environment (SBX-4)
- `deploy`, `jobs`: the deploy and stop jobs and their queue (SBX-4, JOB-1)
- `comment`: the PR comment owed through the outbox (WH-8)
- `registry`, `health`: the API object, health checks and logs (SBX-2, SBX-5)
"""

from app.sandbox.health import (
    DockerEngineUnavailable,
    SandboxLogsTimeout,
    SandboxNotFound,
    UnknownSandboxService,
    check_sandbox_health,
    sandbox_logs,
)
from app.sandbox.identity import (
    compose_project_for,
    pr_sandbox_id,
    pr_sandbox_key,
    sandbox_id_for_key,
)
from app.sandbox.jobs import (
    SandboxJobConflict,
    enqueue_sandbox_job,
    execute_sandbox_job,
)
from app.sandbox.registry import STOPPABLE_STATUSES, list_sandboxes, sandbox_to_dict
from app.sandbox.stacks import STACKS, UnsupportedTechStack

__all__ = [
    "STACKS",
    "STOPPABLE_STATUSES",
    "DockerEngineUnavailable",
    "SandboxJobConflict",
    "SandboxLogsTimeout",
    "SandboxNotFound",
    "UnknownSandboxService",
    "UnsupportedTechStack",
    "check_sandbox_health",
    "compose_project_for",
    "enqueue_sandbox_job",
    "execute_sandbox_job",
    "list_sandboxes",
    "pr_sandbox_id",
    "pr_sandbox_key",
    "sandbox_id_for_key",
    "sandbox_logs",
    "sandbox_to_dict",
]
