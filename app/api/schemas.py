"""pydantic v2 models of the `/v1` request inputs and response bodies (API-4).

Input models validate bodies and query strings (through `parse_body` and
`parse_query`, which answer 422 in API-3's shape). Output models describe the JSON
the routes answer with; `/v1/openapi.json` is generated from both, and the tests
validate real responses against the output models.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

# The same values as RUN_STATUSES and RUN_TYPES + SANDBOX_JOB_TYPES of the models
# (a test keeps them equal), spelled out so that they appear in the OpenAPI document.
RunStatus = Literal["queued", "running", "done", "failed", "halted", "interrupted"]
RunType = Literal["epic", "rock", "issue", "sandbox_deploy", "sandbox_stop"]


# Database integer bounds: larger values are refused as invalid input, not 500s.
MAX_INT32 = 2**31 - 1
MAX_INT64 = 2**63 - 1


class Input(BaseModel):
    """Request inputs: unknown fields are ignored (API-8 says so for run-active)."""

    model_config = ConfigDict(extra="ignore")


class Output(BaseModel):
    """Response bodies; extra keys are allowed so a model never hides data."""

    model_config = ConfigDict(extra="allow")


# Inputs -------------------------------------------------------------------------------


class ExplorerQuery(Input):
    path: str = "."


class ReadQuery(Input):
    path: str


class SaveBody(Input):
    path: str
    content: str


class RunActiveBody(Input):
    path: str | None = None
    build_id: str | None = None
    type: Literal["epic", "rock", "issue"] | None = None
    issue_id: str | None = None
    department: str | None = None
    reset: bool = False


class BoardQuery(Input):
    dept: str = "core"


class PreviewQuery(Input):
    path: str
    issue_id: str | None = None


class ChatDriverBody(Input):
    message: str = Field(min_length=1, max_length=20_000)


class RunListQuery(Input):
    limit: int = Field(default=10, ge=1, le=100)
    offset: int = Field(default=0, ge=0, le=MAX_INT32)
    status: RunStatus | None = None
    type: RunType | None = None


class EventsQuery(Input):
    after: int = Field(default=0, ge=0, le=MAX_INT64)
    limit: int = Field(default=100, ge=1, le=1000)
    run_id: str | None = Field(default=None, max_length=32)
    card_id: str | None = Field(default=None, max_length=200)


class SandboxListQuery(Input):
    all: bool = False


class SandboxLogsQuery(Input):
    service: str | None = None


# Outputs ------------------------------------------------------------------------------


class ErrorOut(Output):
    detail: str | list[dict[str, Any]]


class OkOut(Output):
    ok: Literal[True]


class VersionOut(Output):
    version: str
    api: Literal["v1"]


class HeartbeatOut(Output):
    status: Literal["online"]
    timestamp: str
    active_tasks: int
    queued_tasks: int


class SystemMetricsOut(Output):
    cpu_percent: float
    ram_percent: float
    vram_gb_used: float
    vram_total_gb: float
    timestamp: str
    cpu: float
    memory: float


class ExplorerItem(Output):
    name: str
    is_dir: bool
    ext: str


class ExplorerOut(Output):
    items: list[ExplorerItem]
    path: str


class ReadOut(Output):
    content: str


class CalendarOut(Output):
    current_sprint: str
    sprint_start: str
    sprint_end: str


class RunQueuedOut(Output):
    session_id: str
    status: Literal["queued"]
    build_id: str | None


class BoardIssue(Output):
    id: str
    name: str
    runtime_status: str | None


class BoardEpic(Output):
    id: str
    name: str
    description: str | None = None
    status: str | None = None
    issues: list[BoardIssue] = []
    error: str | None = None


class BoardRock(Output):
    id: str
    name: str
    description: str | None
    status: str | None
    epics: list[BoardEpic]


class BoardAlert(Output):
    type: Literal["error", "warning", "info"]
    message: str
    action_required: str | None


class BoardOut(Output):
    rocks: list[BoardRock]
    orphaned_epics: list[BoardEpic]
    orphaned_issues: list[dict[str, Any]]
    artifacts: list[str]
    alerts: list[BoardAlert]


class PreviewStep(Output):
    step: int
    issue_id: str
    summary: str
    assigned_to: str
    compiled_system_prompt: str


class PreviewOut(Output):
    """One of three shapes, told apart by `type`."""

    type: Literal["issue", "rock", "epic"]
    id: str
    display_name: str
    assigned_to: str | None = None
    compiled_system_prompt: str | None = None
    description: str | None = None
    milestone_tasks: str | None = None
    epics: list[dict[str, Any]] | None = None
    sequencing: list[PreviewStep] | None = None


class ChatDriverOut(Output):
    response: str


class RunCounts(Output):
    cards: dict[str, int]
    turns: int
    tokens: int


class RunOut(Output):
    id: str
    type: str
    name: str | None
    department: str | None
    status: RunStatus
    task_input: str | None
    target_id: str
    build_id: str | None
    builds: list[str]
    source: str
    transcript: list[dict[str, Any]] | None
    queued_at: str
    start_time: str | None
    end_time: str | None
    error: str | None
    halt_requested: bool


class RunDetailOut(RunOut):
    counts: RunCounts


class HaltOut(Output):
    session_id: str
    status: Literal["halted", "halting"]


class RoleMetrics(Output):
    tokens: int
    lines_written: int
    last_action: str
    detail: str


class RoleMetricsMap(RootModel[dict[str, RoleMetrics]]):
    """API-11: role name to its metrics; `{}` for a run without events."""


class CardOut(Output):
    id: str
    build_id: str
    epic_id: str | None
    parent_id: str | None
    session_id: str | None
    seat: str
    summary: str
    type: str
    priority: float
    sprint: str | None
    status: str
    wait_reason: str | None
    assignee: str | None
    note: str | None
    description: str | None
    requirements: str | None
    resolution: str | None
    credits_spent: float
    retry_count: int
    max_retries: int
    depends_on: list[str]
    verification: dict[str, Any] | None
    metrics: dict[str, Any] | None
    created_at: str
    updated_at: str


class CommentOut(Output):
    id: int
    author: str | None
    content: str
    created_at: str


class HistoryOut(Output):
    timestamp: str
    role: str
    action: str
    from_status: str | None
    to_status: str | None


class CardDetailOut(CardOut):
    comments: list[CommentOut]
    history: list[HistoryOut]


class VerificationResult(Output):
    """VER-3."""

    timestamp: str
    total_scenarios: int
    passed: int
    failed: int
    fatal: bool
    fatal_error: str | None
    network: str | None
    duration_ms: int
    logs: list[str]


class VerifyOut(Output):
    card_id: str
    result: VerificationResult


class EventOut(Output):
    """EVT-1."""

    id: int
    timestamp: str
    role: str
    event: str
    level: Literal["debug", "info", "warning", "error"]
    run_id: str | None
    card_id: str | None
    data: dict[str, Any]


class EventsPageOut(Output):
    events: list[EventOut]
    last_event_id: int
    resync: bool


class SnapshotOut(Output):
    session_id: str
    config_json: dict[str, Any]
    log_history: list[Any]
    captured_at: str


class SandboxPorts(Output):
    api: int | None
    frontend: int | None
    database: int | None
    admin_tool: int | None


class SandboxOut(Output):
    """SBX-2: never passwords, env files or host paths."""

    id: str
    rock_id: str | None
    project_name: str | None
    tech_stack: str
    status: str
    ports: SandboxPorts
    compose_project: str
    api_url: str | None
    frontend_url: str | None
    admin_url: str | None
    database_url: str | None
    created_at: str
    deployed_at: str | None
    deleted_at: str | None
    last_error: str | None
    health_checks_passed: int
    health_checks_failed: int


class SandboxStopOut(Output):
    ok: Literal[True]
    job_id: str
    status: Literal["queued"]


class SandboxLogsOut(Output):
    logs: str
