"""The board and asset previews (API-10), read from the asset tiers on every call.

Board of a department: its rocks with their epics and issues, the epics no rock of
any department refers to, standalone issue files (`issues/` folders, as older Orket
trees and the chat driver's `create_issue` keep them), artifacts, and alerts: one
structure alert when anything is orphaned and one per warning the loader reported
for what the board shows. An asset that cannot be used appears in place as
`{"id", "name", "error"}`, so one bad file never hides the rest. `core` shows what
core can run (config, core and packaged tiers); any other department its own folder
of the model tree.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from flask import Response, jsonify
from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from app.api import schemas
from app.api.blueprint import v1
from app.api.errors import ApiError
from app.api.openapi import route
from app.api.validation import parse_query
from app.engine.assets import (
    CORE,
    AssetError,
    AssetNotFoundError,
    AssetStore,
    AssetWarning,
    Epic,
    Rock,
)
from app.engine.assets import Issue as AssetIssue
from app.engine.prompt import system_prompt
from app.engine.providers import resolve_model
from app.engine.tools import visible_tools
from app.models.runtime import Issue as Card
from app.runs import department_from
from app.services import current_services

STRUCTURE_ACTION = (
    "Reference each orphaned epic from a rock; move each orphaned issue into an epic."
)
ISSUES_FOLDER = "issues"


def asset_names(store: AssetStore, category: str, department: str) -> list[str]:
    """What a board lists: for core every tier, else the department's own folder."""
    if department == CORE:
        return store.list_assets(category, CORE)
    return store.department_assets(category, department)


def _error_entry(name: str, error: Exception) -> dict[str, Any]:
    return {"id": name, "name": name, "error": str(error)}


class Board:
    """One department's board; collects the warnings of the assets it shows."""

    def __init__(self, store: AssetStore, department: str, session: DbSession) -> None:
        self.store = store
        self.department = department
        self.session = session
        self.warnings: dict[tuple[str, str], AssetWarning] = {}

    def build(self) -> dict[str, Any]:
        referenced = self._referenced_epics()
        rocks = [
            self._rock(name)
            for name in asset_names(self.store, "rocks", self.department)
        ]
        orphaned_epics = [
            self._epic(name, self.department)
            for name in asset_names(self.store, "epics", self.department)
            if (self.department, name) not in referenced
        ]
        orphaned_issues = self._standalone_issues()
        return {
            "rocks": rocks,
            "orphaned_epics": orphaned_epics,
            "orphaned_issues": orphaned_issues,
            "artifacts": self.store.artifacts(self.department),
            "alerts": self._alerts(len(orphaned_epics), len(orphaned_issues)),
        }

    # Loading

    def _note(self, warnings: tuple[AssetWarning, ...]) -> None:
        for warning in warnings:
            self.warnings.setdefault((warning.asset, warning.message), warning)

    def _rock(self, name: str) -> dict[str, Any]:
        try:
            rock = self.store.load_rock(name, self.department)
        except (AssetError, AssetNotFoundError) as exc:
            return {
                **_error_entry(name, exc),
                "description": None,
                "status": None,
                "epics": [],
            }
        self._note(rock.warnings)
        return {
            "id": rock.id,
            "name": rock.name,
            "description": rock.description,
            "status": rock.status,
            "epics": [self._epic(entry.epic, entry.department) for entry in rock.epics],
        }

    def _epic(self, name: str, department: str) -> dict[str, Any]:
        try:
            epic = self.store.load_epic(name, department)
        except (AssetError, AssetNotFoundError) as exc:
            return _error_entry(name, exc)
        self._note(epic.warnings)
        statuses = self._card_statuses(epic.default_build_id)
        return {
            "id": epic.id,
            "name": epic.name,
            "description": epic.description,
            "status": epic.status,
            "issues": [
                {**_issue(issue), "runtime_status": statuses.get(issue.id)}
                for issue in epic.issues
            ],
        }

    def _card_statuses(self, build_id: str) -> dict[str, str]:
        """Card statuses of a build (an epic's default build: card id = issue id)."""
        rows = self.session.execute(
            select(Card.id, Card.status).where(Card.build_id == build_id)
        )
        return {card_id: status for card_id, status in rows}

    def _referenced_epics(self) -> set[tuple[str, str]]:
        """`(department, epic)` named by any rock of any department."""
        referenced: set[tuple[str, str]] = set()
        for department in self.store.departments():
            for name in asset_names(self.store, "rocks", department):
                try:
                    rock: Rock = self.store.load_rock(name, department)
                except (AssetError, AssetNotFoundError):
                    continue
                referenced.update((e.department, e.epic) for e in rock.epics)
        return referenced

    def _standalone_issues(self) -> list[dict[str, Any]]:
        folders = [self.store.model_root / self.department / ISSUES_FOLDER]
        if self.department == CORE:
            folders.insert(0, self.store.config_root / ISSUES_FOLDER)
        paths = [
            path
            for folder in folders
            if folder.is_dir()
            for path in folder.glob("*.json")
        ]
        return [_standalone_issue(path) for path in sorted(paths, key=lambda p: p.name)]

    def _alerts(self, orphan_epics: int, orphan_issues: int) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = []
        if orphan_epics + orphan_issues > 0:
            alerts.append(
                {
                    "type": "error",
                    "message": (
                        f"Structure Alert: {orphan_epics} Orphan Epics, "
                        f"{orphan_issues} Orphaned Issues."
                    ),
                    "action_required": STRUCTURE_ACTION,
                }
            )
        for warning in self.warnings.values():
            alerts.append(
                {
                    "type": "info" if warning.level == "info" else "warning",
                    "message": f"{warning.asset}: {warning.message}",
                    "action_required": None,
                }
            )
        return alerts


def _issue(issue: AssetIssue) -> dict[str, Any]:
    return {**dict(issue.raw), "id": issue.id, "name": issue.summary}


def _standalone_issue(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"), strict=False)
    except (OSError, UnicodeDecodeError, ValueError):
        return {"id": path.stem, "name": path.stem, "error": "not a readable JSON file"}
    if not isinstance(data, dict):
        return {"id": path.stem, "name": path.stem, "error": "not a JSON object"}
    name = data.get("summary") or data.get("name") or path.stem
    return {**data, "id": str(data.get("id") or path.stem), "name": str(name)}


@route(
    v1,
    "/system/board",
    "GET",
    "Rocks, epics and issues of a department, with orphans and alerts",
    response=schemas.BoardOut,
    query=schemas.BoardQuery,
    errors=(404,),
)
def board() -> Response:
    query = parse_query(schemas.BoardQuery)
    services = current_services()
    store = AssetStore(services.settings)
    if query.dept not in store.departments():
        raise ApiError(404, "Department not found")
    with services.runtime_db.reader() as session:
        return jsonify(Board(store, query.dept, session).build())


# Preview ------------------------------------------------------------------------------


def work_prompt(store: AssetStore, epic: Epic, issue: AssetIssue) -> str:
    """The ENG-7 system prompt the issue's seat would get for work (no memories)."""
    try:
        organization = store.load_organization()
        team = store.load_team(epic.team, epic.department)
        environment = store.load_environment(epic.environment, epic.department)
        seat = team.find_seat(issue.seat)
        if seat is None:
            return (
                f"(no prompt: seat '{issue.seat}' is not a seat of team '{team.stem}')"
            )
        roles = [store.load_role(name, team, epic.department) for name in seat.roles]
    except (AssetError, AssetNotFoundError) as exc:
        return f"(no prompt: {exc})"
    if not roles:
        return f"(no prompt: seat '{seat.key}' has no roles)"
    model = resolve_model(
        roles[0].name,
        dict(epic.model_overrides),
        environment.model,
        organization.default_llm,
    )
    return system_prompt(
        organization=organization,
        team_name=team.name,
        seat_key=seat.key,
        roles=roles,
        idesign=epic.idesign,
        tools=visible_tools([role.tools for role in roles]),
        dialect=store.dialect_for_model(model, epic.department),
    )


def _load_for_preview(load: Any, name: str, department: str) -> Any:
    try:
        return load(name, department)
    except AssetNotFoundError:
        raise ApiError(404, "Asset not found") from None
    except AssetError as exc:
        raise ApiError(422, exc.message) from None


def _rock_preview(rock: Rock) -> dict[str, Any]:
    return {
        "type": "rock",
        "id": rock.id,
        "display_name": rock.name,
        "description": rock.description,
        "milestone_tasks": rock.task,
        "epics": [{"epic": e.epic, "department": e.department} for e in rock.epics],
    }


def _issue_preview(store: AssetStore, epic: Epic, issue_id: str) -> dict[str, Any]:
    issue = epic.find_issue(issue_id)
    if issue is None:
        raise ApiError(404, "Asset not found")
    return {
        "type": "issue",
        "id": issue.id,
        "display_name": issue.summary,
        "assigned_to": issue.seat,
        "compiled_system_prompt": work_prompt(store, epic, issue),
    }


def _epic_preview(store: AssetStore, epic: Epic) -> dict[str, Any]:
    return {
        "type": "epic",
        "id": epic.id,
        "display_name": epic.name,
        "sequencing": [
            {
                "step": issue.position,
                "issue_id": issue.id,
                "summary": issue.summary,
                "assigned_to": issue.seat,
                "compiled_system_prompt": work_prompt(store, epic, issue),
            }
            for issue in epic.issues
        ],
    }


@route(
    v1,
    "/system/preview-asset",
    "GET",
    "An epic, rock or issue as the engine would see it, with compiled prompts",
    response=schemas.PreviewOut,
    query=schemas.PreviewQuery,
    errors=(404,),
)
def preview_asset() -> Response:
    query = parse_query(schemas.PreviewQuery)
    store = AssetStore(current_services().settings)
    path = PurePosixPath(query.path.replace("\\", "/"))
    name = path.stem
    department = department_from(None, query.path)
    if not name:
        raise ApiError(404, "Asset not found")

    if "rocks" in path.parts[:-1]:
        rock = _load_for_preview(store.load_rock, name, department)
        return jsonify(_rock_preview(rock))
    epic = _load_for_preview(store.load_epic, name, department)
    if query.issue_id:
        return jsonify(_issue_preview(store, epic, query.issue_id))
    return jsonify(_epic_preview(store, epic))
