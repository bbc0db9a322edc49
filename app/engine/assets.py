"""Reading the JSON assets that describe work: epics, rocks, teams, roles,
environments, dialects and scripts, plus the organization.

Lookup, first hit wins (`<name>.json` in each place):

1. `<config>/<category>/`                 ORKET_CONFIG_DIR, the operator's overrides
2. `<model>/<department>/<category>/`     ORKET_MODEL_DIR, the asked-for department
3. `<model>/core/<category>/`             the shared department
4. `app/assets/core/<category>/`          packaged defaults

A role that no file in 1-3 defines is taken from the `roles` map of the team asking
for it, before falling back to a packaged role.

Packaged defaults are laid out like a model tree: `app/assets/organization.json` and
`app/assets/core/<category>/<name>.json` (the demo epic, team, script and environment,
the default roles, dialects and environments). `app/assets/verification/` holds the
demo's fixture and is not an asset category.

The loader takes real Orket trees as they are. What it can use despite a flaw becomes
an `AssetWarning` on the loaded asset (level `info` for facts that are only shown,
such as an epic status that is not a card status); what it cannot use raises
`AssetError`. A missing asset raises `AssetNotFoundError`. Files are read on every
call and never written.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

from app.engine.state_machine import REVIEWER_ROLE, STATUSES

if TYPE_CHECKING:
    from app.config import Settings

CATEGORIES = ("epics", "rocks", "teams", "roles", "environments", "dialects", "scripts")
CORE = "core"
PACKAGED_ROOT = Path(__file__).resolve().parent.parent / "assets"
TOOL_CATALOGUE = (
    "read_file",
    "write_file",
    "list_directory",
    "create_issue",
    "add_issue_comment",
    "get_issue_context",
    "update_issue_status",
    "nominate_card",
    "refinement_proposal",
)
PROVIDERS = ("ollama", "openai", "scripted")
DEFAULT_ISSUE_TYPES = ("issue", "story", "bug", "task")
DEFAULT_IDESIGN_THRESHOLD = 10
DEFAULT_PRIORITY = 2.0
PRIORITY_WORDS = {"high": 3.0, "medium": 2.0, "low": 1.0}
SCRIPT_SCHEMA = "orket-script/1"
SCRIPT_EXHAUSTION = ("empty", "repeat_last", "error")
ISSUE_LIST_KEYS = ("issues", "stories", "cards")
KNOWN_EPIC_KEYS = frozenset(
    {
        "id",
        "name",
        "summary",
        "description",
        "team",
        "environment",
        "requirements",
        "example_task",
        "references",
        "params",
        "architecture_governance",
        "status",
        *ISSUE_LIST_KEYS,
    }
)
# Organization file names; `load_organization` gives the order they are tried in.
ORG_INFO_FILE = "org_info.json"
ORG_ARCHITECTURE_FILE = "architecture.json"
ORGANIZATION_FILE = "organization.json"

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")


# Results ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AssetWarning:
    """Something an asset holds that the runtime cannot use, or only shows."""

    asset: str  # "<category>/<name>", or "organization"
    path: str
    message: str
    level: str = "warning"  # or "info"

    def __str__(self) -> str:
        return f"{self.asset} ({self.path}): {self.message}"


class AssetError(Exception):
    """An asset exists but cannot be used; `str()` is `Asset <name> is invalid: ...`."""

    def __init__(self, name: str, problem: str, path: Path | str | None = None):
        super().__init__(f"Asset {name} is invalid: {problem}")
        self.name = name
        self.problem = problem
        self.path = str(path) if path is not None else None

    @property
    def message(self) -> str:
        return str(self)


class AssetNotFoundError(LookupError):
    def __init__(self, category: str, name: str, department: str = CORE):
        super().__init__(f"No {category[:-1]} '{name}' for department '{department}'")
        self.category = category
        self.name = name
        self.department = department


@dataclass(frozen=True)
class Origin:
    """Where an asset was read: tier `config`, `department`, `core`, `team` (a
    team's inline role), `packaged`, or `model` (the model tree's organization)."""

    tier: str
    path: Path


@dataclass(frozen=True)
class Scenario:
    id: str
    description: str
    input_data: Any
    expected_output: Any


@dataclass(frozen=True)
class Verification:
    fixture_path: str | None
    scenarios: tuple[Scenario, ...]


@dataclass(frozen=True)
class Issue:
    id: str
    summary: str
    seat: str
    type: str
    priority: float
    note: str | None
    description: str | None
    requirements: str | None
    depends_on: tuple[str, ...]
    max_retries: int
    verification: Verification | None
    status: str | None  # as written in the asset; seeding ignores it
    position: int  # 1-based place in the epic's list
    id_derived: bool
    raw: Mapping[str, Any]  # the issue object as found, for display

    @property
    def has_fixture(self) -> bool:
        return (
            self.verification is not None and self.verification.fixture_path is not None
        )


@dataclass(frozen=True)
class Epic:
    stem: str  # the file name; cards use it as `epic_id`
    department: str
    id: str
    name: str
    description: str | None
    team: str
    environment: str
    requirements: str | None
    example_task: str | None
    references: tuple[str, ...]
    model_overrides: Mapping[str, str]
    idesign: bool
    status: str | None
    issues: tuple[Issue, ...]
    origin: Origin
    warnings: tuple[AssetWarning, ...] = ()

    @property
    def default_build_id(self) -> str:
        return f"build-{self.stem}"

    def find_issue(self, issue_id: str) -> Issue | None:
        return next((issue for issue in self.issues if issue.id == issue_id), None)


@dataclass(frozen=True)
class RockEpic:
    epic: str
    department: str


@dataclass(frozen=True)
class Rock:
    stem: str
    department: str
    id: str
    name: str
    description: str | None
    status: str | None
    task: str | None
    epics: tuple[RockEpic, ...]
    origin: Origin
    warnings: tuple[AssetWarning, ...] = ()


@dataclass(frozen=True)
class Role:
    name: str
    display_name: str
    description: str
    intent: str | None
    responsibilities: tuple[str, ...]
    constraints: tuple[str, ...]
    # Known tools the role lists; None when it lists none (then every tool is visible).
    tools: tuple[str, ...] | None
    issue_types: tuple[str, ...]
    origin: Origin
    warnings: tuple[AssetWarning, ...] = ()


@dataclass(frozen=True)
class Seat:
    key: str
    name: str
    roles: tuple[str, ...]


@dataclass(frozen=True)
class Team:
    stem: str
    department: str
    name: str
    description: str | None
    seats: Mapping[str, Seat]
    inline_roles: Mapping[str, Role]
    origin: Origin
    warnings: tuple[AssetWarning, ...] = ()

    def find_seat(self, seat: str) -> Seat | None:
        """The seat a card names, compared lower-cased with spaces as underscores."""
        wanted = seat_key(seat)
        return next(
            (s for key, s in self.seats.items() if seat_key(key) == wanted), None
        )

    def review_seat(self) -> Seat | None:
        """The first seat holding the reviewer role."""
        return next((s for s in self.seats.values() if REVIEWER_ROLE in s.roles), None)


@dataclass(frozen=True)
class Environment:
    name: str
    description: str | None
    model: str | None
    provider: str | None  # as written; see `resolved_provider`
    temperature: float
    seed: int | None
    timeout: float | None
    script: str | None  # path relative to the config dir
    origin: Origin
    warnings: tuple[AssetWarning, ...] = ()

    @property
    def resolved_provider(self) -> str:
        if self.provider:
            return self.provider
        return "scripted" if self.script_name is not None else "ollama"

    @property
    def script_name(self) -> str | None:
        """`demo` for model `scripted:demo`."""
        if self.model and self.model.startswith("scripted:"):
            return self.model.removeprefix("scripted:")
        return None


@dataclass(frozen=True)
class Dialect:
    name: str
    model_family: str
    dsl_format: str
    constraints: tuple[str, ...]
    hallucination_guard: str
    origin: Origin
    warnings: tuple[AssetWarning, ...] = ()


@dataclass(frozen=True)
class Script:
    """Scripted replies: key (`<issue>/<role>`, `<issue>`, `<role>`, `*`) to replies,
    each a string sent verbatim or a JSON value sent compactly."""

    name: str
    on_exhausted: str
    delay_ms: int
    replies: Mapping[str, tuple[Any, ...]]
    origin: Origin
    warnings: tuple[AssetWarning, ...] = ()


@dataclass(frozen=True)
class Organization:
    name: str
    vision: str | None
    ethos: str | None
    idesign_threshold: int
    departments: tuple[str, ...]
    architecture: Mapping[str, Any]
    process_rules: Mapping[str, Any]
    default_llm: str | None
    origin: Origin
    warnings: tuple[AssetWarning, ...] = ()


class EpicIssue(NamedTuple):
    epic: Epic
    issue: Issue


@dataclass(frozen=True)
class CheckedFile:
    asset: str  # "<category>/<name>" or "organization"
    department: str  # whose lookups the file serves
    tier: str
    path: str
    error: str | None
    warnings: tuple[AssetWarning, ...]


@dataclass
class CheckReport:
    """Every asset file and what loading it found."""

    files: list[CheckedFile] = field(default_factory=list)

    @property
    def errors(self) -> list[CheckedFile]:
        return [item for item in self.files if item.error]

    @property
    def warnings(self) -> list[AssetWarning]:
        return self._notes("warning")

    @property
    def infos(self) -> list[AssetWarning]:
        return self._notes("info")

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        return (
            f"{len(self.files)} asset files checked: {len(self.errors)} errors, "
            f"{len(self.warnings)} warnings, {len(self.infos)} notes"
        )

    def lines(self) -> list[str]:
        """One line per problem, errors first, then the summary."""
        lines = [f"ERROR {item.path}: {item.error}" for item in self.errors]
        lines += [f"WARNING {w.path}: {w.asset}: {w.message}" for w in self.warnings]
        lines += [f"INFO {w.path}: {w.asset}: {w.message}" for w in self.infos]
        lines.append(self.summary())
        return lines

    def _notes(self, level: str) -> list[AssetWarning]:
        return [w for item in self.files for w in item.warnings if w.level == level]


# Small helpers that callers share ---------------------------------------------------


def seat_key(seat: str) -> str:
    return seat.strip().lower().replace(" ", "_")


def derived_issue_id(epic_stem: str, position: int) -> str:
    """`<EPIC STEM>-<n>` for the n-th (1-based) issue of an epic that gives no id."""
    return f"{_NOT_ALNUM.sub('_', epic_stem).upper()}-{position}"


def normalize_priority(value: Any) -> tuple[float, str | None]:
    """A priority as a number, and a warning when the value could not be read."""
    if value is None:
        return DEFAULT_PRIORITY, None
    if isinstance(value, int | float) and not isinstance(value, bool):
        if math.isfinite(value):
            return float(value), None
    elif isinstance(value, str):
        word = value.strip().lower()
        if word in PRIORITY_WORDS:
            return PRIORITY_WORDS[word], None
        number = _float_or_none(word)
        if number is not None:
            return number, None
    return (
        DEFAULT_PRIORITY,
        f"priority {value!r} is not a number or high/medium/low; "
        f"using {DEFAULT_PRIORITY}",
    )


def dialect_name_for_model(model: str) -> str:
    lowered = model.lower()
    for needle, dialect in (
        ("qwen", "qwen"),
        ("llama", "llama3"),
        ("deepseek", "deepseek-r1"),
        ("phi", "phi"),
    ):
        if needle in lowered:
            return dialect
    return "generic"


def _float_or_none(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _is_safe_name(name: str) -> bool:
    return bool(_SAFE_NAME.match(name)) and not name.endswith(".json")


# Reading one file -------------------------------------------------------------------


@dataclass
class _Context:
    """The asset being read: where problems go and how they are named."""

    name: str
    asset: str
    path: Path
    warnings: list[AssetWarning] = field(default_factory=list)

    def warn(self, message: str, level: str = "warning") -> None:
        self.warnings.append(AssetWarning(self.asset, str(self.path), message, level))

    def fail(self, problem: str) -> NoReturn:
        raise AssetError(self.name, problem, self.path)


def _read_json(context: _Context) -> dict[str, Any]:
    """The file's top-level object; raw control characters in strings are tolerated."""
    try:
        text = context.path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        context.fail("the file is not UTF-8 text")
    except OSError as exc:
        context.fail(f"cannot read the file ({exc.strerror or exc})")

    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        data = _read_json_leniently(text, exc, context)
    if not isinstance(data, dict):
        context.fail("the file must hold a JSON object")
    return data


def _read_json_leniently(
    text: str, strict_error: json.JSONDecodeError, context: _Context
) -> Any:
    # Older Orket files hold raw line breaks inside strings; Python's decoder accepts
    # them with strict=False and still refuses every other syntax error.
    try:
        data = json.loads(text, strict=False)
    except json.JSONDecodeError as exc:
        repaired = _repair_multiline_strings(text.split("\n"), depth=3, budget=[500])
        if repaired is not None:
            context.warn(
                "multi-line JSON strings with unescaped quotes (an embedded JSON "
                "example written as raw text); read them as plain text"
            )
            return repaired
        problem = f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        if strict_error.msg.startswith("Invalid control character"):
            problem += (
                f" (raw control characters inside strings from line "
                f"{strict_error.lineno} were tolerated; this error remains)"
            )
        context.fail(problem)
    context.warn("raw control characters (line breaks, tabs) inside JSON strings")
    return data


_OPENING_VALUE = re.compile(r'^(\s*"[^"\\]+"\s*:\s*)"(.*)$')
_CLOSING_LINE = re.compile(r'^(.*)"(\s*,?)\s*$')
_MAX_STRING_LINES = 200


def _closes_on_its_line(rest: str) -> bool:
    try:
        json.loads('"' + rest.rstrip().removesuffix(",").rstrip(), strict=False)
    except json.JSONDecodeError:
        return False
    return True


def _repair_multiline_strings(
    lines: list[str], depth: int, budget: list[int]
) -> Any | None:
    """Read `"key": "<raw text over several lines>"` values as plain strings.

    Some Orket dialect files hold a JSON example pasted as raw text inside a string
    (line breaks and unescaped quotes). For the first value that opens a string and
    does not close it on its line, try each later line ending in `"` or `",` as its
    end, keep the first reading under which the whole file parses, and repeat for the
    next such value (at most `depth` values, at most `budget[0]` parse attempts in
    all). None when no reading parses.
    """
    for start, line in enumerate(lines):
        opening = _OPENING_VALUE.match(line)
        if opening is None or _closes_on_its_line(opening.group(2)):
            continue
        last = min(len(lines), start + _MAX_STRING_LINES)
        for end in range(start + 1, last):
            closing = _CLOSING_LINE.match(lines[end])
            if closing is None:
                continue
            value = "\n".join(
                [opening.group(2), *lines[start + 1 : end], closing.group(1)]
            )
            joined = opening.group(1) + json.dumps(value) + closing.group(2)
            candidate = [*lines[:start], joined, *lines[end + 1 :]]
            budget[0] -= 1
            if budget[0] < 0:
                return None
            try:
                return json.loads("\n".join(candidate), strict=False)
            except json.JSONDecodeError:
                if depth > 1:
                    nested = _repair_multiline_strings(candidate, depth - 1, budget)
                    if nested is not None:
                        return nested
        return None
    return None


class _Fields:
    """Typed reads from one JSON object; a wrong type makes the asset invalid."""

    def __init__(self, context: _Context, data: Mapping[str, Any], where: str = ""):
        self.context = context
        self.data = data
        self.where = where

    def fail(self, problem: str) -> NoReturn:
        self.context.fail(self.where + problem)

    def warn(self, message: str, level: str = "warning") -> None:
        self.context.warn(self.where + message, level)

    def text(self, *keys: str, default: str | None = None) -> str | None:
        """The first of `keys` present with a value; it must be a string."""
        for key in keys:
            value = self.data.get(key)
            if value is None:
                continue
            if not isinstance(value, str):
                self.fail(f"'{key}' must be a string")
            return value
        return default

    def required_text(self, key: str) -> str:
        value = self.text(key)
        if value is None or not value.strip():
            self.fail(f"'{key}' is required")
        return value.strip()

    def prose(self, key: str) -> str | None:
        """A string, or a list of strings joined one per line."""
        value = self.data.get(key)
        if isinstance(value, list):
            return "\n".join(self._string_items(key, value))
        return self.text(key)

    def strings(
        self, key: str, data: Mapping[str, Any] | None = None
    ) -> tuple[str, ...]:
        """A list of strings; a single string counts as a list of one."""
        value = (self.data if data is None else data).get(key)
        if value is None:
            return ()
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, list):
            self.fail(f"'{key}' must be a list of strings")
        return self._string_items(key, value)

    def mapping(
        self, key: str, data: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        value = (self.data if data is None else data).get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(f"'{key}' must be an object")
        return value

    def number(self, key: str, default: float | None) -> float | None:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(f"'{key}' must be a number")
        return float(value)

    def integer(self, key: str, default: int | None, minimum: int = 0) -> int | None:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(f"'{key}' must be a whole number of at least {minimum}")
        return value

    def _string_items(self, key: str, values: list[Any]) -> tuple[str, ...]:
        if not all(isinstance(item, str) for item in values):
            self.fail(f"'{key}' must be a list of strings")
        return tuple(values)


def _informational_status(fields: _Fields) -> str | None:
    status = fields.data.get("status")
    if status is None:
        return None
    if not isinstance(status, str) or status not in STATUSES:
        fields.warn(
            f"status {status!r} is not a card status; it is shown for information only",
            level="info",
        )
    return status if isinstance(status, str) else str(status)


# Parsers, one per category ----------------------------------------------------------


def _parse_epic(fields: _Fields, stem: str, department: str, origin: Origin) -> Epic:
    governance = fields.mapping("architecture_governance")
    idesign = governance.get("idesign", True)
    if not isinstance(idesign, bool):
        fields.fail("'architecture_governance.idesign' must be true or false")
    overrides = fields.mapping("model_overrides", fields.mapping("params"))
    if not all(isinstance(value, str) for value in overrides.values()):
        fields.fail("'params.model_overrides' must map role names to model names")

    issues = _parse_issues(fields, stem)
    _warn_unread_lists(fields)
    return Epic(
        stem=stem,
        department=department,
        id=fields.text("id") or stem,
        name=fields.text("name", "summary") or stem,
        description=fields.text("description"),
        team=fields.required_text("team"),
        environment=fields.required_text("environment"),
        requirements=fields.prose("requirements"),
        example_task=fields.text("example_task"),
        references=fields.strings("references"),
        model_overrides=dict(overrides),
        idesign=idesign,
        status=_informational_status(fields),
        issues=issues,
        origin=origin,
        warnings=tuple(fields.context.warnings),
    )


def _issue_list_key(data: Mapping[str, Any]) -> str | None:
    return next((key for key in ISSUE_LIST_KEYS if key in data), None)


def _parse_issues(fields: _Fields, stem: str) -> tuple[Issue, ...]:
    key = _issue_list_key(fields.data)
    if key is None:
        return ()
    items = fields.data[key]
    if items is None:
        return ()
    if not isinstance(items, list):
        fields.fail(f"'{key}' must be a list of issues")

    issues = []
    for position, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            fields.fail(f"issue {position} of '{key}' must be an object")
        issues.append(_parse_issue(fields.context, item, stem, position))
    seen: set[str] = set()
    for issue in issues:
        if issue.id in seen:
            fields.fail(f"issue id '{issue.id}' appears more than once")
        seen.add(issue.id)
    return tuple(issues)


def _parse_issue(
    context: _Context, data: dict[str, Any], stem: str, position: int
) -> Issue:
    raw_id = data.get("id")
    if isinstance(raw_id, int) and not isinstance(raw_id, bool):
        raw_id = str(raw_id)
    if raw_id is not None and not (isinstance(raw_id, str) and raw_id.strip()):
        context.fail(f"issue {position}: 'id' must be a non-empty string")
    issue_id = raw_id.strip() if raw_id else derived_issue_id(stem, position)
    fields = _Fields(context, data, where=f"issue {issue_id}: ")

    priority, problem = normalize_priority(data.get("priority"))
    if problem:
        fields.warn(problem)
    note = fields.text("note")
    return Issue(
        id=issue_id,
        summary=fields.text("summary", "name") or _summary_from(note, issue_id),
        seat=fields.text("seat") or "standard",
        type=fields.text("type") or "issue",
        priority=priority,
        note=note,
        description=fields.text("description"),
        requirements=fields.prose("requirements"),
        depends_on=fields.strings("depends_on"),
        max_retries=fields.integer("max_retries", 3) or 0,
        verification=_parse_verification(fields),
        status=fields.text("status"),
        position=position,
        id_derived=not raw_id,
        raw=data,
    )


def _summary_from(note: str | None, issue_id: str) -> str:
    """Issues written without a summary show the first line of their note."""
    first_line = (note or "").strip().splitlines()[:1]
    return first_line[0][:80] if first_line else issue_id


def _parse_verification(fields: _Fields) -> Verification | None:
    data = fields.mapping("verification")
    if not data:
        return None
    inner = _Fields(fields.context, data, where=fields.where + "verification: ")
    fixture = inner.text("fixture_path", "verification_fixture")
    scenarios = data.get("scenarios") or []
    if not isinstance(scenarios, list):
        inner.fail("'scenarios' must be a list")

    parsed = []
    for number, item in enumerate(scenarios, start=1):
        if not isinstance(item, dict):
            inner.fail(f"scenario {number} must be an object")
        scenario = _Fields(fields.context, item, where=inner.where)
        scenario_id = scenario.text("id") or f"S{number}"
        parsed.append(
            Scenario(
                id=scenario_id,
                description=scenario.text("description") or scenario_id,
                input_data=item.get("input_data", {}),
                expected_output=item.get("expected_output"),
            )
        )
    return Verification(fixture_path=fixture, scenarios=tuple(parsed))


def _warn_unread_lists(fields: _Fields) -> None:
    used = _issue_list_key(fields.data)
    for key, value in fields.data.items():
        if not isinstance(value, list) or not value or key == used:
            continue
        if key in ISSUE_LIST_KEYS:
            fields.warn(f"'{key}' is ignored: issues are read from '{used}'")
        elif key not in KNOWN_EPIC_KEYS:
            fields.warn(
                f"unknown list '{key}' is not read "
                "(issues come from 'issues', 'stories' or 'cards')"
            )


def _parse_rock(fields: _Fields, stem: str, department: str, origin: Origin) -> Rock:
    entries = fields.data.get("epics")
    if not isinstance(entries, list):
        fields.fail("'epics' is required: a list of {epic, department}")

    epics = []
    for number, entry in enumerate(entries, start=1):
        if isinstance(entry, str):
            entry = {"epic": entry}
        if not isinstance(entry, dict):
            fields.fail(f"epic entry {number} must be an object")
        item = _Fields(fields.context, entry, where=f"epic entry {number}: ")
        epics.append(
            RockEpic(
                epic=item.required_text("epic"),
                department=item.text("department") or department,
            )
        )
    return Rock(
        stem=stem,
        department=department,
        id=fields.text("id") or stem,
        name=fields.text("name", "summary") or stem,
        description=fields.text("description"),
        status=_informational_status(fields),
        task=fields.text("task"),
        epics=tuple(epics),
        origin=origin,
        warnings=tuple(fields.context.warnings),
    )


def _parse_role(fields: _Fields, name: str, origin: Origin) -> Role:
    listed = fields.data.get("tools")
    tools = None if listed is None else _known_tools(fields, fields.strings("tools"))
    capabilities = fields.mapping("capabilities")
    issue_types = fields.strings("issue_types", capabilities) or DEFAULT_ISSUE_TYPES
    return Role(
        name=name,
        display_name=fields.text("name", "summary") or name,
        description=fields.required_text("description"),
        intent=fields.text("intent"),
        responsibilities=fields.strings("responsibilities"),
        constraints=fields.strings("constraints"),
        tools=tools,
        issue_types=issue_types,
        origin=origin,
        warnings=tuple(fields.context.warnings),
    )


def _known_tools(fields: _Fields, tools: tuple[str, ...]) -> tuple[str, ...]:
    for tool in tools:
        if tool not in TOOL_CATALOGUE:
            fields.warn(f"unknown tool '{tool}' is ignored")
    return tuple(tool for tool in tools if tool in TOOL_CATALOGUE)


def _parse_team(fields: _Fields, stem: str, department: str, origin: Origin) -> Team:
    seats_data = fields.data.get("seats")
    if not isinstance(seats_data, dict):
        fields.fail("'seats' is required: an object of {name, roles} by seat key")

    seats = {}
    for key, value in seats_data.items():
        if not isinstance(value, dict):
            fields.fail(f"seat '{key}' must be an object")
        seat = _Fields(fields.context, value, where=f"seat '{key}': ")
        seats[key] = Seat(
            key=key, name=seat.text("name") or key, roles=seat.strings("roles")
        )
    return Team(
        stem=stem,
        department=department,
        name=fields.text("name") or stem,
        description=fields.text("description"),
        seats=seats,
        inline_roles=_inline_roles(fields, origin),
        origin=origin,
        warnings=tuple(fields.context.warnings),
    )


def _inline_roles(fields: _Fields, origin: Origin) -> dict[str, Role]:
    """The team's own role definitions; an unusable one is skipped with a warning."""
    roles = {}
    for name, value in fields.mapping("roles").items():
        if not isinstance(value, dict):
            fields.warn(f"inline role '{name}' is not an object and is ignored")
            continue
        context = _Context(name, fields.context.asset, fields.context.path)
        inline = _Fields(context, value, where=f"inline role '{name}': ")
        try:
            roles[name] = _parse_role(inline, name, Origin("team", origin.path))
        except AssetError as exc:
            fields.warn(f"{exc.problem}; the role is ignored")
            continue
        fields.context.warnings.extend(context.warnings)
    return roles


def _parse_environment(fields: _Fields, name: str, origin: Origin) -> Environment:
    provider = fields.text("provider")
    if provider is not None and provider not in PROVIDERS:
        fields.fail(f"unknown provider '{provider}' (expected {', '.join(PROVIDERS)})")
    timeout = fields.number("timeout", None)
    if timeout is not None and timeout <= 0:
        fields.fail("'timeout' must be positive")
    return Environment(
        name=name,
        description=fields.text("description"),
        model=fields.text("model"),
        provider=provider,
        temperature=fields.number("temperature", 0.0) or 0.0,
        seed=fields.integer("seed", None, minimum=-(2**63)),
        timeout=timeout,
        script=fields.text("script"),
        origin=origin,
        warnings=tuple(fields.context.warnings),
    )


def _parse_dialect(fields: _Fields, name: str, origin: Origin) -> Dialect:
    return Dialect(
        name=name,
        model_family=fields.text("model_family") or name,
        dsl_format=fields.text("dsl_format") or "",
        constraints=fields.strings("constraints"),
        hallucination_guard=fields.text("hallucination_guard") or "",
        origin=origin,
        warnings=tuple(fields.context.warnings),
    )


def _parse_script(fields: _Fields, name: str, origin: Origin) -> Script:
    schema = fields.text("schema", default=SCRIPT_SCHEMA)
    if schema != SCRIPT_SCHEMA:
        fields.fail(f"unsupported schema '{schema}' (expected '{SCRIPT_SCHEMA}')")
    on_exhausted = fields.text("on_exhausted", default="empty")
    if on_exhausted not in SCRIPT_EXHAUSTION:
        fields.fail(
            f"'on_exhausted' must be one of {', '.join(SCRIPT_EXHAUSTION)}, "
            f"not '{on_exhausted}'"
        )

    replies = {}
    for key, value in fields.mapping("replies").items():
        if not isinstance(value, list):
            fields.fail(f"replies for '{key}' must be a list")
        if not all(isinstance(reply, str | dict | list) for reply in value):
            fields.fail(f"each reply for '{key}' must be a string, object or array")
        replies[key] = tuple(value)
    return Script(
        name=name,
        on_exhausted=on_exhausted or "empty",
        delay_ms=fields.integer("delay_ms", 0) or 0,
        replies=replies,
        origin=origin,
        warnings=tuple(fields.context.warnings),
    )


def _parse_organization(fields: _Fields, origin: Origin) -> Organization:
    architecture = fields.mapping("architecture")
    process_rules = fields.mapping("process_rules")
    threshold = architecture.get("idesign_threshold", DEFAULT_IDESIGN_THRESHOLD)
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0:
        fields.warn(
            f"architecture.idesign_threshold {threshold!r} is not a whole number; "
            f"using {DEFAULT_IDESIGN_THRESHOLD}"
        )
        threshold = DEFAULT_IDESIGN_THRESHOLD
    default_llm = process_rules.get("default_llm")
    if default_llm is not None and not isinstance(default_llm, str):
        fields.fail("'process_rules.default_llm' must be a string")
    return Organization(
        name=fields.text("name") or "Orket",
        vision=fields.text("vision"),
        ethos=fields.text("ethos"),
        idesign_threshold=threshold,
        departments=fields.strings("departments") or (CORE,),
        architecture=architecture,
        process_rules=process_rules,
        default_llm=default_llm,
        origin=origin,
        warnings=tuple(fields.context.warnings),
    )


# The store ---------------------------------------------------------------------------


class AssetStore:
    """Finds and loads assets for one settings object. Safe to share between threads:
    it holds no state beyond its roots."""

    def __init__(self, settings: Settings, packaged_root: Path = PACKAGED_ROOT):
        self.settings = settings
        self.config_root = settings.config_path
        self.model_root = settings.model_path
        self.packaged_root = packaged_root

    # Where things are

    def departments(self) -> list[str]:
        """`core` and every directory of the model tree."""
        names = {CORE}
        if self.model_root.is_dir():
            names.update(
                path.name
                for path in self.model_root.iterdir()
                if path.is_dir() and _is_safe_name(path.name)
            )
        return sorted(names)

    def locate(self, category: str, name: str, department: str = CORE) -> Origin | None:
        """The first file that defines the asset, or None."""
        if not (_is_safe_name(name) and _is_safe_name(department)):
            return None
        return next(
            (
                where
                for where in self._candidates(category, name, department)
                if where.path.is_file()
            ),
            None,
        )

    def list_assets(self, category: str, department: str = CORE) -> list[str]:
        """Names of every asset the department can load, from all tiers."""
        if not _is_safe_name(department):
            return []
        folders = [folder for _, folder in self._folders(category, department)]
        return sorted({stem for folder in folders for stem in _stems(folder)})

    def department_assets(self, category: str, department: str) -> list[str]:
        """Names defined in the department's own folder of the model tree only."""
        if not _is_safe_name(department):
            return []
        return sorted(_stems(self.model_root / department / category))

    def artifacts(self, department: str) -> list[str]:
        """File names in `<model>/<department>/artifacts`."""
        if not _is_safe_name(department):
            return []
        folder = self.model_root / department / "artifacts"
        return sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []

    # Loading

    def load_epic(self, name: str, department: str = CORE) -> Epic:
        origin = self._require("epics", name, department)
        return self._epic_at(origin, department)

    def load_rock(self, name: str, department: str = CORE) -> Rock:
        origin = self._require("rocks", name, department)
        return self._rock_at(origin, department)

    def load_team(self, name: str, department: str = CORE) -> Team:
        origin = self._require("teams", name, department)
        return self._team_at(origin, department)

    def load_role(
        self, name: str, team: Team | None = None, department: str = CORE
    ) -> Role:
        """A role file from the model tiers, else the team's inline role, else a
        packaged role."""
        origin = self.locate("roles", name, department)
        if origin and origin.tier != "packaged":
            return self._role_at(origin)
        if team and name in team.inline_roles:
            return team.inline_roles[name]
        if origin:
            return self._role_at(origin)
        raise AssetNotFoundError("roles", name, department)

    def load_environment(self, name: str, department: str = CORE) -> Environment:
        return self._environment_at(self._require("environments", name, department))

    def load_dialect(self, name: str, department: str = CORE) -> Dialect:
        return self._dialect_at(self._require("dialects", name, department))

    def dialect_for_model(self, model: str, department: str = CORE) -> Dialect:
        """The dialect for a model name; the packaged `generic` one when the matching
        dialect is missing or invalid (the reason is in its warnings)."""
        name = dialect_name_for_model(model)
        try:
            return self.load_dialect(name, department)
        except (AssetNotFoundError, AssetError) as exc:
            fallback = self._dialect_at(self._packaged("dialects", "generic"))
            note = AssetWarning(
                f"dialects/{name}",
                str(fallback.origin.path),
                f"{exc}; using the packaged generic dialect",
            )
            return replace(fallback, warnings=(*fallback.warnings, note))

    def load_script(self, name: str, department: str = CORE) -> Script:
        return self._script_at(self._require("scripts", name, department))

    def load_script_file(self, relative_path: str) -> Script:
        """A script named by an environment's `script`, relative to the config dir."""
        path = self.config_root / relative_path
        if not path.is_file():
            raise AssetNotFoundError("scripts", relative_path)
        return self._script_at(Origin("config", path))

    def script_for(self, environment: Environment) -> Script:
        """The environment's `script` file, else the script asset `scripted:<name>`."""
        if environment.script:
            return self.load_script_file(environment.script)
        if environment.script_name is None:
            raise AssetNotFoundError("scripts", f"{environment.name} (no script)")
        return self.load_script(environment.script_name)

    def load_organization(self) -> Organization:
        """The first organization that exists of: `<config>/organization.json`;
        `<config>/org_info.json` merged with `<config>/architecture.json`;
        `<model>/organization.json`; the packaged one. Then ORKET_ORG_* overrides."""
        organization = self._organization_from_files()
        return replace(
            organization,
            name=self.settings.org_name or organization.name,
            vision=self.settings.org_vision or organization.vision,
        )

    def find_epic_issue(
        self, issue_id: str, department: str = CORE
    ) -> EpicIssue | None:
        """The issue with this explicit or derived id; invalid epics are skipped."""
        for name in self.list_assets("epics", department):
            try:
                epic = self.load_epic(name, department)
            except AssetError:
                continue
            issue = epic.find_issue(issue_id)
            if issue:
                return EpicIssue(epic, issue)
        return None

    # Checking everything

    def check(self, department: str | None = None) -> CheckReport:
        """Load every asset file (of one department and what it falls back on, or of
        all) and report each one's error or warnings, plus broken references."""
        report = CheckReport()
        if department is not None and department not in self.departments():
            report.files.append(
                CheckedFile(
                    f"department/{department}",
                    department,
                    "department",
                    str(self.model_root / department),
                    "department not found",
                    (),
                )
            )
            return report
        report.files.extend(self._check_organization_files())
        for tier, owner, root in self._check_roots(department):
            for category in CATEGORIES:
                for path in sorted((root / category).glob("*.json")):
                    report.files.append(
                        self._check_file(category, Origin(tier, path), owner)
                    )
        return report

    # Internals

    def _folders(self, category: str, department: str) -> Iterator[tuple[str, Path]]:
        """The tiers' folders for a category, in lookup order."""
        if category not in CATEGORIES:
            raise ValueError(f"unknown asset category '{category}'")
        yield "config", self.config_root / category
        if department != CORE:
            yield "department", self.model_root / department / category
        yield "core", self.model_root / CORE / category
        yield "packaged", self.packaged_root / CORE / category

    def _candidates(
        self, category: str, name: str, department: str
    ) -> Iterator[Origin]:
        for tier, folder in self._folders(category, department):
            yield Origin(tier, folder / f"{name}.json")

    def _require(self, category: str, name: str, department: str) -> Origin:
        origin = self.locate(category, name, department)
        if origin is None:
            raise AssetNotFoundError(category, name, department)
        return origin

    def _packaged(self, category: str, name: str) -> Origin:
        return Origin("packaged", self.packaged_root / CORE / category / f"{name}.json")

    def _fields(self, category: str, origin: Origin) -> _Fields:
        stem = origin.path.stem
        context = _Context(stem, f"{category}/{stem}", origin.path)
        return _Fields(context, _read_json(context))

    def _epic_at(self, origin: Origin, department: str) -> Epic:
        fields = self._fields("epics", origin)
        return _parse_epic(fields, origin.path.stem, department, origin)

    def _rock_at(self, origin: Origin, department: str) -> Rock:
        fields = self._fields("rocks", origin)
        return _parse_rock(fields, origin.path.stem, department, origin)

    def _team_at(self, origin: Origin, department: str) -> Team:
        fields = self._fields("teams", origin)
        return _parse_team(fields, origin.path.stem, department, origin)

    def _role_at(self, origin: Origin) -> Role:
        return _parse_role(self._fields("roles", origin), origin.path.stem, origin)

    def _environment_at(self, origin: Origin) -> Environment:
        fields = self._fields("environments", origin)
        return _parse_environment(fields, origin.path.stem, origin)

    def _dialect_at(self, origin: Origin) -> Dialect:
        return _parse_dialect(
            self._fields("dialects", origin), origin.path.stem, origin
        )

    def _script_at(self, origin: Origin) -> Script:
        return _parse_script(self._fields("scripts", origin), origin.path.stem, origin)

    def _organization_choices(self) -> list[list[Origin]]:
        """Each choice of organization files that exist, in order of preference; the
        second merges two files."""
        config = self.config_root
        choices = [
            [Origin("config", config / ORGANIZATION_FILE)],
            [
                Origin("config", config / ORG_INFO_FILE),
                Origin("config", config / ORG_ARCHITECTURE_FILE),
            ],
            [Origin("model", self.model_root / ORGANIZATION_FILE)],
            [Origin("packaged", self.packaged_root / ORGANIZATION_FILE)],
        ]
        present = [[o for o in choice if o.path.is_file()] for choice in choices]
        return [choice for choice in present if choice]

    def _organization_from_files(self) -> Organization:
        choices = self._organization_choices()
        if not choices:
            raise AssetNotFoundError("organizations", ORGANIZATION_FILE)
        return self._organization_at(choices[0])

    def _organization_at(self, sources: list[Origin]) -> Organization:
        """One organization from its files, later files' keys winning."""
        warnings: list[AssetWarning] = []
        data: dict[str, Any] = {}
        for origin in sources:
            data.update(
                _read_json(
                    _Context("organization", "organization", origin.path, warnings)
                )
            )
        context = _Context("organization", "organization", sources[0].path, warnings)
        return _parse_organization(_Fields(context, data), sources[0])

    def _check_organization_files(self) -> list[CheckedFile]:
        """Each organization file on its own, used or not."""
        return [
            self._check_one(
                "organization",
                CORE,
                origin,
                partial(self._organization_at, [origin]),
            )
            for choice in self._organization_choices()
            for origin in choice
        ]

    def _check_roots(self, department: str | None) -> list[tuple[str, str, Path]]:
        if department is None:
            departments = self.departments()
        else:
            departments = sorted({department, CORE})
        roots = [("config", CORE, self.config_root)]
        roots += [
            ("core" if name == CORE else "department", name, self.model_root / name)
            for name in departments
        ]
        roots.append(("packaged", CORE, self.packaged_root / CORE))
        return roots

    def _check_file(
        self, category: str, origin: Origin, department: str
    ) -> CheckedFile:
        asset = f"{category}/{origin.path.stem}"
        checked = self._check_one(
            asset,
            department,
            origin,
            lambda: self._load_at(category, origin, department),
        )
        if _is_safe_name(origin.path.stem):
            return checked
        unreachable = AssetWarning(
            asset,
            str(origin.path),
            "the file name cannot be looked up: use letters, digits, '.', '_' "
            "and '-', starting with a letter, digit or '_'",
        )
        return replace(checked, warnings=(*checked.warnings, unreachable))

    def _check_one(
        self, asset: str, department: str, origin: Origin, load: Callable[[], Any]
    ) -> CheckedFile:
        warnings: list[AssetWarning] = []
        error = None
        try:
            loaded = load()
            warnings.extend(loaded.warnings)
            warnings.extend(self._broken_references(asset, loaded, department))
        except AssetError as exc:
            error = exc.message
        except Exception as exc:
            # check-assets promises one line per file and never a traceback, so a
            # loader bug on one file is reported as that file's error.
            error = f"unexpected loader failure ({type(exc).__name__}: {exc})"
        return CheckedFile(
            asset, department, origin.tier, str(origin.path), error, tuple(warnings)
        )

    def _load_at(self, category: str, origin: Origin, department: str) -> Any:
        if category == "epics":
            return self._epic_at(origin, department)
        if category == "rocks":
            return self._rock_at(origin, department)
        if category == "teams":
            return self._team_at(origin, department)
        loaders: dict[str, Callable[[Origin], Any]] = {
            "roles": self._role_at,
            "environments": self._environment_at,
            "dialects": self._dialect_at,
            "scripts": self._script_at,
        }
        return loaders[category](origin)

    def _broken_references(
        self, asset: str, loaded: Any, department: str
    ) -> list[AssetWarning]:
        if isinstance(loaded, Epic):
            problems = self._epic_references(loaded, department)
        elif isinstance(loaded, Rock):
            problems = self._rock_references(loaded)
        elif isinstance(loaded, Team):
            problems = self._team_references(loaded, department)
        elif isinstance(loaded, Environment):
            problems = self._environment_references(loaded)
        else:
            problems = []
        path = str(loaded.origin.path)
        return [AssetWarning(asset, path, problem) for problem in problems]

    def _epic_references(self, epic: Epic, department: str) -> list[str]:
        problems = []
        team, problem = self._try(lambda: self.load_team(epic.team, department))
        if problem:
            problems.append(f"team: {problem}")
        _, problem = self._try(
            lambda: self.load_environment(epic.environment, department)
        )
        if problem:
            problems.append(f"environment: {problem}")
        if team is not None:
            problems += [
                f"issue {issue.id}: seat '{issue.seat}' is not a seat of team "
                f"'{team.stem}'"
                for issue in epic.issues
                if team.find_seat(issue.seat) is None
            ]
        return problems

    def _rock_references(self, rock: Rock) -> list[str]:
        return [
            f"epic '{entry.epic}' of department '{entry.department}' not found"
            for entry in rock.epics
            if self.locate("epics", entry.epic, entry.department) is None
        ]

    def _team_references(self, team: Team, department: str) -> list[str]:
        problems = []
        for seat in team.seats.values():
            for role in seat.roles:
                _, problem = self._try(partial(self.load_role, role, team, department))
                if problem:
                    problems.append(f"seat '{seat.key}': {problem}")
        return problems

    def _environment_references(self, environment: Environment) -> list[str]:
        if environment.resolved_provider != "scripted":
            return []
        _, problem = self._try(lambda: self.script_for(environment))
        return [f"script: {problem}"] if problem else []

    @staticmethod
    def _try(load: Callable[[], Any]) -> tuple[Any, str | None]:
        try:
            return load(), None
        except (AssetError, AssetNotFoundError) as exc:
            return None, str(exc)


def _stems(folder: Path) -> set[str]:
    if not folder.is_dir():
        return set()
    return {
        path.stem
        for path in folder.glob("*.json")
        if path.is_file() and _is_safe_name(path.stem)
    }
