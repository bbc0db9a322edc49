"""`POST /v1/system/chat-driver` (API-13): an operator's message to the
`operations_lead` role, answered with a plan.

The model gets the inventory (departments, teams, rocks, epics) and the message;
the first JSON object of its reply is the plan. `create_epic`, `create_rock` and
`create_issue` write a new asset file under the config directory (a sanitised
name, never over an existing file); the other actions are answered as text.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any

from flask import Response, jsonify

from app.api import schemas
from app.api.blueprint import v1
from app.api.errors import ApiError
from app.api.openapi import route
from app.api.validation import parse_body
from app.config import Settings
from app.engine.assets import CORE, AssetError, AssetNotFoundError, AssetStore
from app.engine.model_choice import script_document
from app.engine.providers import (
    Completion,
    CompletionOptions,
    ModelProviderError,
    ModelTimeoutError,
    ProviderConfigError,
    build_provider,
    resolve_model,
    resolve_provider_name,
)
from app.events import EventLog
from app.services import current_services

log = logging.getLogger(__name__)

DRIVER_ROLE = "operations_lead"
SCRIPT_KEY = "DRIVER"
CREATE_CATEGORIES = {
    "create_epic": "epics",
    "create_rock": "rocks",
    "create_issue": "issues",
}
TEXT_ACTIONS = ("assign_team", "turn_directive", "adopt_issue")
TEXT_KEYS = ("response", "message", "summary", "reason")
NAME_LIMIT = 64
REPLY_SHOWN_CHARS = 2000
_NOT_NAME = re.compile(r"[^a-z0-9_]+")


class DriverUnavailable(Exception):
    """The driver environment cannot give a provider (missing asset, bad script)."""


# The model call -----------------------------------------------------------------------


def _role_text(store: AssetStore) -> str:
    try:
        role = store.load_role(DRIVER_ROLE)
    except (AssetError, AssetNotFoundError):
        return "You are the operations lead: you turn requests into work for the teams."
    lines = [f"You are {role.display_name}. {role.description}"]
    if role.intent:
        lines.append(role.intent)
    lines += [f"- {item}" for item in role.responsibilities]
    return "\n".join(lines)


def inventory(store: AssetStore) -> dict[str, list[str]]:
    departments = store.departments()

    def every(category: str) -> list[str]:
        names = set(store.list_assets(category, CORE))
        for department in departments:
            names.update(store.department_assets(category, department))
        return sorted(names)

    return {
        "departments": departments,
        "teams": every("teams"),
        "rocks": every("rocks"),
        "epics": every("epics"),
    }


def driver_messages(store: AssetStore, message: str) -> list[dict[str, str]]:
    actions = ", ".join([*CREATE_CATEGORIES, *TEXT_ACTIONS])
    system = "\n\n".join(
        [
            _role_text(store),
            "INVENTORY\n" + json.dumps(inventory(store), indent=2),
            'PLAN\nAnswer with one JSON object: {"action": <one of '
            + actions
            + '>, "name": <asset name for create actions>, "asset": <the new '
            'asset\'s JSON for create actions>, "response": <text for the operator>}.',
        ]
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": message}]


def _provider(
    settings: Settings, store: AssetStore, deadline: float
) -> tuple[Any, Any]:
    """The driver environment's provider and its options."""
    try:
        environment = store.load_environment(settings.driver_environment)
        organization = store.load_organization()
        model = resolve_model(
            DRIVER_ROLE, {}, environment.model, organization.default_llm
        )
        name = resolve_provider_name(environment.provider, model)
        script = None
        if name == "scripted":
            script = script_document(store.script_for(environment))
        timeout = min(environment.timeout or settings.model_timeout_sec, deadline)
        provider = build_provider(settings, name, model, timeout, script)
    except (AssetError, AssetNotFoundError, ProviderConfigError) as exc:
        raise DriverUnavailable(str(exc)) from None
    options = CompletionOptions(
        temperature=environment.temperature,
        seed=environment.seed,
        timeout=timeout,
        context={"run_id": None, "issue_id": SCRIPT_KEY, "role": DRIVER_ROLE},
    )
    return provider, options


def complete_within(
    provider: Any, messages: list[dict[str, str]], options: Any, deadline: float
) -> Completion:
    """The provider's reply, or 504 once `deadline` seconds have passed.

    The call runs on its own daemon thread, so a hung model server cannot hold the
    request past the deadline; its own HTTP timeout ends the thread later.
    """
    outcome: dict[str, Any] = {}
    finished = threading.Event()

    def call() -> None:
        try:
            outcome["completion"] = provider.complete(messages, options)
        except Exception as exc:  # noqa: BLE001 - handed to the request thread below
            outcome["error"] = exc
        finally:
            finished.set()

    threading.Thread(target=call, name="chat-driver", daemon=True).start()
    if not finished.wait(deadline):
        raise ApiError(504, "Model timed out")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["completion"]


def _emit_usage(events: EventLog, completion: Completion) -> None:
    events.emit(
        "model_usage",
        {
            "provider": completion.provider,
            "model": completion.model,
            **completion.usage,
            "latency_ms": completion.latency_ms,
        },
        role=DRIVER_ROLE,
    )


# The plan -----------------------------------------------------------------------------


def first_json_object(text: str) -> dict[str, Any] | None:
    """The first complete JSON object in `text` (prose and fences around it allowed)."""
    decoder = json.JSONDecoder()
    index = text.find("{")
    while index != -1:
        try:
            value, _ = decoder.raw_decode(text, index)
        except ValueError:
            index = text.find("{", index + 1)
            continue
        if isinstance(value, dict):
            return value
        index = text.find("{", index + 1)
    return None


def asset_name(value: Any) -> str | None:
    """A name of `[a-z0-9_]{1,64}` made from what the model gave, or None."""
    if not isinstance(value, str):
        return None
    name = _NOT_NAME.sub("_", value.strip().lower()).strip("_")[:NAME_LIMIT]
    return name or None


def write_new_file(path: Path, data: bytes) -> bool:
    """Create `path` atomically; False (nothing written) when it already exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)
        # link() refuses an existing target: a concurrent writer is never overwritten.
        os.link(temporary, path)
        return True
    except FileExistsError:
        return False
    finally:
        Path(temporary).unlink(missing_ok=True)


def create_asset(config_root: Path, action: str, plan: dict[str, Any]) -> str:
    category = CREATE_CATEGORIES[action]
    asset = plan.get("asset")
    if not isinstance(asset, dict):
        asset = {key: value for key, value in plan.items() if key != "action"}
    name = asset_name(plan.get("name") or asset.get("name") or asset.get("id"))
    if name is None:
        return f"The plan '{action}' gives no usable name; nothing was written."
    relative = f"{category}/{name}.json"
    data = (json.dumps(asset, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    if not write_new_file(config_root / category / f"{name}.json", data):
        return (
            f"{relative} already exists in the config directory; nothing was written."
        )
    return f"Created {relative} in the config directory."


def answer(config_root: Path, reply: str) -> str:
    plan = first_json_object(reply) or {}
    action = plan.get("action")
    if not isinstance(action, str):
        shown = reply.strip()[:REPLY_SHOWN_CHARS] or "(empty reply)"
        return f"The driver replied without a plan, so nothing was done. Reply: {shown}"
    if action in CREATE_CATEGORIES:
        return create_asset(config_root, action, plan)
    if action in TEXT_ACTIONS:
        text = next(
            (plan[key] for key in TEXT_KEYS if isinstance(plan.get(key), str)), None
        )
        details = {key: value for key, value in plan.items() if key != "action"}
        return text or f"{action}: {json.dumps(details, ensure_ascii=False)}"
    known = ", ".join([*CREATE_CATEGORIES, *TEXT_ACTIONS])
    return f"Unknown plan action '{action}' (known: {known}); nothing was done."


@route(
    v1,
    "/system/chat-driver",
    "POST",
    "Ask the operations lead; create actions write new assets under the config dir",
    response=schemas.ChatDriverOut,
    body=schemas.ChatDriverBody,
    errors=(502, 504),
)
def chat_driver() -> Response:
    body = parse_body(schemas.ChatDriverBody)
    services = current_services()
    settings = services.settings
    store = AssetStore(settings)
    deadline = settings.chat_driver_timeout_sec

    try:
        provider, options = _provider(settings, store, deadline)
        messages = driver_messages(store, body.message)
        completion = complete_within(provider, messages, options, deadline)
    except ModelTimeoutError:
        raise ApiError(504, "Model timed out") from None
    except (DriverUnavailable, ModelProviderError) as exc:
        log.warning("chat driver: %s", exc)
        raise ApiError(502, "Model provider unavailable") from None

    _emit_usage(services.events, completion)
    return jsonify({"response": answer(settings.config_path, completion.text)})
