"""Choosing the model, provider and dialect for a role of an epic (ENG-11, ENG-12).

Providers are built once per run and model, so a scripted provider's reply cursors
last for the whole run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.engine.assets import (
    AssetError,
    AssetNotFoundError,
    Dialect,
    Script,
)
from app.engine.context import EpicScope, RunState
from app.engine.providers import (
    CompletionOptions,
    ModelProvider,
    ProviderConfigError,
    build_provider,
    resolve_model,
    resolve_provider_name,
)


class ProviderSetupError(Exception):
    """No provider can be built: unknown provider, missing script or server URL."""


@dataclass(frozen=True)
class ModelChoice:
    provider: ModelProvider
    provider_name: str
    model: str
    dialect: Dialect

    def options(self, scope: EpicScope, context: dict[str, Any]) -> CompletionOptions:
        environment = scope.environment
        return CompletionOptions(
            temperature=environment.temperature,
            seed=environment.seed,
            timeout=environment.timeout,
            context=context,
        )


def model_for(run: RunState, scope: EpicScope, role: str) -> str:
    return resolve_model(
        role,
        dict(scope.epic.model_overrides),
        scope.environment.model,
        run.organization.default_llm,
    )


def choose_model(run: RunState, scope: EpicScope, role: str | None) -> ModelChoice:
    """The provider for `role` (None: the environment's own model)."""
    model = model_for(run, scope, role or "")
    name = resolve_provider_name(scope.environment.provider, model)
    key = (name, model, scope.environment.name)
    with run.lock:
        cached = run.providers.get(key)
    if cached is None:
        cached = _build(run, scope, name, model)
        with run.lock:
            cached = run.providers.setdefault(key, cached)
    dialect = run.store.dialect_for_model(model, scope.department)
    return ModelChoice(cached, name, model, dialect)


def _build(run: RunState, scope: EpicScope, name: str, model: str) -> ModelProvider:
    try:
        script = _script(run, scope, model) if name == "scripted" else None
        return build_provider(
            run.settings, name, model, scope.environment.timeout, script
        )
    except (AssetError, AssetNotFoundError, ProviderConfigError) as exc:
        raise ProviderSetupError(
            f"Environment '{scope.environment.name}': {exc}"
        ) from None


def _script(run: RunState, scope: EpicScope, model: str) -> dict[str, Any] | None:
    environment = scope.environment
    if environment.script:
        script = run.store.load_script_file(environment.script)
    elif model.startswith("scripted:"):
        script = run.store.load_script(
            model.removeprefix("scripted:"), scope.department
        )
    else:
        return None
    return script_document(script)


def script_document(script: Script) -> dict[str, Any]:
    """A loaded script asset in the `orket-script/1` shape the provider reads."""
    return {
        "schema": "orket-script/1",
        "on_exhausted": script.on_exhausted,
        "delay_ms": script.delay_ms,
        "replies": {key: list(replies) for key, replies in script.replies.items()},
    }
