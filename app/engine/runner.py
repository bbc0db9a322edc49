"""The engine: runs one `sessions` row (an epic, a rock or an issue) to a terminal
status (ENG-5, ENG-15, JOB-4).

`Engine(settings, runtime_db, events).run(run_id)` is called the same way by the CLI,
a job thread and a test. The row already exists as `running`; the engine emits
everything from `session_start` to `run_finished` (always last), sets the terminal
status and `end_time`, and never raises for a failure of the work itself.
"""

from __future__ import annotations

import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from app.config import Settings
from app.db import Database, changed_rows
from app.engine.assets import (
    AssetError,
    AssetNotFoundError,
    AssetStore,
    Epic,
)
from app.engine.attempt import run_attempt, snapshot_config
from app.engine.cards import CardRepository
from app.engine.context import EpicScope, RunState
from app.engine.memory import Memory
from app.engine.model_choice import ProviderSetupError, choose_model
from app.engine.planner import FINISHED, describe_stuck, plan_tick, stuck_cards
from app.engine.records import (
    record_success,
    store_transcript,
    write_snapshot,
)
from app.engine.seeding import (
    SeedConflict,
    reset,
    restart_target,
    resume,
    seed_epic,
)
from app.events import EventLog
from app.metrics import RUNS
from app.models.base import isoformat, load_json, utcnow
from app.models.runtime import Session as RunRow

log = logging.getLogger(__name__)


class RunFailure(Exception):
    """Ends the run `failed` with an EVT-4 reason."""

    def __init__(self, reason: str, error: str, stuck: list[dict] | None = None):
        super().__init__(error)
        self.reason = reason
        self.error = error
        self.stuck = stuck or []


@dataclass
class RunResult:
    status: str = "done"
    reason: str | None = None
    error: str | None = None
    stuck: list[dict[str, Any]] = field(default_factory=list)
    scope: list[str] = field(default_factory=list)
    last_scope: EpicScope | None = None
    # Ledger rows (type, artifact) written once the run has ended.
    successes: list[tuple[str, str]] = field(default_factory=list)

    def fail(self, failure: RunFailure) -> None:
        self.status = "failed"
        self.reason = failure.reason
        self.error = failure.error
        self.stuck = failure.stuck


@dataclass(frozen=True)
class EpicTarget:
    """One epic to run: where it is, which build, and (issue runs) which card."""

    stem: str
    department: str
    build_id: str
    reset: bool
    card_id: str | None = None


class Engine:
    def __init__(
        self,
        settings: Settings,
        runtime_db: Database,
        events: EventLog,
        store: AssetStore | None = None,
    ) -> None:
        self.settings = settings
        self.db = runtime_db
        self.events = events
        self.store = store or AssetStore(settings)
        self.cards = CardRepository(runtime_db, events)

    def run(self, run_id: str) -> str:
        """Run the row to its end and return its terminal status."""
        started = time.monotonic()
        with self.db.reader() as session:
            row = session.get(RunRow, run_id)
        if row is None:
            raise LookupError(f"Run {run_id} not found")
        if row.status != "running":
            return row.status

        self.events.emit(
            "session_start",
            {"epic": row.target_id, "run_id": run_id, "build_id": row.build_id},
            run_id=run_id,
        )
        state: RunState | None = None
        result = RunResult()
        try:
            state = self._state(run_id)
            self._dispatch(row, state, result)
        except RunFailure as exc:
            result.fail(exc)
        except Exception as exc:  # noqa: BLE001 - any engine fault ends the run failed
            log.exception("run %s failed", run_id)
            self.events.emit_error("engine", exc, run_id=run_id)
            result.fail(RunFailure("error", f"internal error ({type(exc).__name__})"))
        return self._finish(row, state, result, started)

    # Setup -----------------------------------------------------------------------

    def _state(self, run_id: str) -> RunState:
        try:
            organization = self.store.load_organization()
        except (AssetError, AssetNotFoundError) as exc:
            raise RunFailure("asset_error", str(exc)) from None
        return RunState(
            settings=self.settings,
            db=self.db,
            events=self.events,
            store=self.store,
            cards=self.cards,
            memory=Memory(self.db),
            run_id=run_id,
            organization=organization,
        )

    def _dispatch(self, row: RunRow, state: RunState, result: RunResult) -> None:
        params = load_json(row.params_json, {})
        department = row.department or "core"
        builds = load_json(row.builds_json, [])
        if row.type == "epic":
            target = EpicTarget(
                row.target_id,
                department,
                builds[0] if builds else f"build-{row.target_id}",
                bool(params.get("reset")),
            )
            self._run_epic(state, target, result, whole_epic=True)
        elif row.type == "rock":
            self._run_rock(state, row, params, result)
        elif row.type == "issue":
            self._run_epic(state, self._issue_target(row, params), result, False)
        else:
            raise RunFailure("error", f"Unknown run type '{row.type}'")

    def _issue_target(self, row: RunRow, params: dict[str, Any]) -> EpicTarget:
        card_id = params.get("card_id") or row.target_id
        card = self.cards.get(card_id)
        epic = params.get("epic") or (card.epic_id if card else None)
        build = card.build_id if card else (load_json(row.builds_json, []) or [None])[0]
        if not epic or not build:
            raise RunFailure("asset_error", f"Card {card_id} has no epic to run it in")
        department = params.get("epic_department") or row.department or "core"
        return EpicTarget(epic, department, build, bool(params.get("reset")), card_id)

    def _run_rock(
        self, state: RunState, row: RunRow, params: dict[str, Any], result: RunResult
    ) -> None:
        try:
            rock = self.store.load_rock(row.target_id, row.department or "core")
        except (AssetError, AssetNotFoundError) as exc:
            raise RunFailure("asset_error", str(exc)) from None
        shared_build = params.get("build_id")
        for entry in rock.epics:
            target = EpicTarget(
                entry.epic,
                entry.department,
                shared_build or f"build-{entry.epic}",
                bool(params.get("reset")),
            )
            self._run_epic(state, target, result, whole_epic=True)
            if result.status != "done":
                return
        result.successes.append(("ROCK_COMPLETED", f"rock:{rock.stem}"))

    # One epic ------------------------------------------------------------------------

    def _run_epic(
        self, state: RunState, target: EpicTarget, result: RunResult, whole_epic: bool
    ) -> None:
        scope = self._scope(state, target)
        result.last_scope = scope
        if whole_epic:
            self._complexity_gate(state, scope.epic)
        self._check_provider(state, scope)
        card_ids = self._seed(state, scope, target)
        result.scope.extend(card_ids)

        self.events.emit(
            "orchestrator_hyper_loop_start",
            {
                "epic": scope.epic.stem,
                "run_id": state.run_id,
                "concurrency": self.settings.epic_concurrency,
            },
            run_id=state.run_id,
        )
        halted = self._traction_loop(state, scope, target.card_id)
        if halted:
            self._halt_cleanup(state, result.scope)
            result.status = "halted"
            return

        scope_cards = self._scope_cards(scope, target.card_id)
        result.scope[:] = list(
            dict.fromkeys(result.scope + [c.id for c in scope_cards])
        )
        if all(card.status in FINISHED for card in scope_cards):
            if (
                whole_epic
                and scope_cards
                and all(c.status == "done" for c in scope_cards)
            ):
                result.successes.append(("EPIC_COMPLETED", f"build:{scope.build_id}"))
            return
        stuck = stuck_cards(scope_cards, self.cards.in_build(scope.build_id))
        raise RunFailure("incomplete", describe_stuck(stuck), stuck)

    def _scope(self, state: RunState, target: EpicTarget) -> EpicScope:
        try:
            epic = self.store.load_epic(target.stem, target.department)
            team = self.store.load_team(epic.team, target.department)
            environment = self.store.load_environment(
                epic.environment, target.department
            )
        except (AssetError, AssetNotFoundError) as exc:
            raise RunFailure("asset_error", f"Epic {target.stem}: {exc}") from None
        config_root = self.settings.config_path
        workspace = self.settings.builds_root / target.build_id
        workspace.mkdir(parents=True, exist_ok=True)
        return EpicScope(
            epic=epic,
            department=target.department,
            team=team,
            environment=environment,
            build_id=target.build_id,
            workspace=workspace,
            references=tuple((config_root / ref).resolve() for ref in epic.references),
            config_root=config_root,
        )

    def _complexity_gate(self, state: RunState, epic: Epic) -> None:
        threshold = state.organization.idesign_threshold
        if len(epic.issues) > threshold and not epic.idesign:
            raise RunFailure(
                "complexity_gate",
                f"Complexity Gate Violation: epic {epic.stem} has {len(epic.issues)} "
                f"issues, more than {threshold}, without iDesign governance "
                "(set architecture_governance.idesign to true or split the epic)",
            )

    def _check_provider(self, state: RunState, scope: EpicScope) -> None:
        try:
            choose_model(state, scope, None)
        except ProviderSetupError as exc:
            raise RunFailure("asset_error", str(exc)) from None

    def _seed(self, state: RunState, scope: EpicScope, target: EpicTarget) -> list[str]:
        try:
            card_ids = seed_epic(self.cards, scope.epic, scope.build_id, state.run_id)
        except SeedConflict as exc:
            raise RunFailure("asset_error", str(exc)) from None
        if target.card_id is not None:
            if self.cards.get(target.card_id) is None:
                raise RunFailure("asset_error", f"Card {target.card_id} not found")
            card_ids = [target.card_id]
            if target.reset:
                reset(self.cards, card_ids, state.run_id)
            else:
                restart_target(self.cards, target.card_id, state.run_id)
        elif target.reset:
            reset(self.cards, card_ids, state.run_id)
        else:
            resume(self.cards, card_ids, state.run_id)
        return card_ids

    def _traction_loop(
        self, state: RunState, scope: EpicScope, only: str | None
    ) -> bool:
        """Ticks until nothing is left to do; True when the run was halted.

        Raises RunFailure(`tick_cap`) only if work remains after the last tick.
        """
        plan = functools.partial(
            plan_tick, self.cards, scope.build_id, scope.epic.stem, only
        )
        workers = self.settings.epic_concurrency
        with ThreadPoolExecutor(
            workers, thread_name_prefix=f"run-{state.run_id}"
        ) as pool:
            for _tick in range(self.settings.max_ticks):
                if state.halt_requested():
                    return True
                attempts = plan()
                if not attempts:
                    return False
                futures = [
                    pool.submit(run_attempt, state, scope, item.card_id, item.review)
                    for item in attempts
                ]
                wait(futures)
                for future in futures:
                    # run_attempt handles its own failures; this is a last resort.
                    error = future.exception()
                    if error is not None:
                        self.events.emit_error("attempt", error, run_id=state.run_id)
        if state.halt_requested():
            return True
        if plan():
            raise RunFailure(
                "tick_cap",
                f"Hyper-Loop exhausted iterations ({self.settings.max_ticks})",
                stuck_cards(
                    self._scope_cards(scope, only), self.cards.in_build(scope.build_id)
                ),
            )
        return False

    def _scope_cards(self, scope: EpicScope, only: str | None) -> list:
        if only:
            card = self.cards.get(only)
            return [card] if card else []
        return self.cards.in_build(scope.build_id, scope.epic.stem)

    def _halt_cleanup(self, state: RunState, card_ids: list[str]) -> None:
        for card in self.cards.many(card_ids).values():
            if card.status == "in_progress":
                self.cards.move(card.id, "halt_cleanup", run_id=state.run_id)

    # The end -------------------------------------------------------------------------

    def _finish(
        self,
        row: RunRow,
        state: RunState | None,
        result: RunResult,
        started: float,
    ) -> str:
        run_id = row.id
        self.events.emit(
            "session_end", {"run_id": run_id, "status": result.status}, run_id=run_id
        )
        status, ended_here = result.status, True
        try:
            if state is not None:
                self._final_records(state, result)
            status, ended_here = self._store_terminal(run_id, result)
        except SQLAlchemyError as exc:
            # The events below still go out, so run_finished stays the last word.
            log.exception("run %s: final records not written", run_id)
            self.events.emit_error("engine finish", exc, run_id=run_id)
        if not ended_here:
            # Someone else (shutdown, the stale-run sweep) already ended the row and
            # announced it; a second run_finished would contradict theirs.
            log.info("run %s was already %s", run_id, status)
            return status
        RUNS.labels(status=status).inc()

        if status == "failed":
            self.events.emit(
                "run_failed",
                {
                    "run_id": run_id,
                    "reason": result.reason or "error",
                    "error": result.error,
                    "stuck_cards": result.stuck,
                },
                level="error",
                run_id=run_id,
            )
        elif status == "halted":
            self.events.emit("run_halted", {"run_id": run_id}, run_id=run_id)
        cards = self.cards.many(result.scope)
        counts: dict[str, int] = {}
        for card in cards.values():
            counts[card.status] = counts.get(card.status, 0) + 1
        self.events.emit(
            "run_finished",
            {
                "run_id": run_id,
                "status": status,
                "cards": counts,
                "turns": state.turn_count if state else 0,
                "tokens": state.token_count if state else 0,
                "duration_ms": int((time.monotonic() - started) * 1000),
            },
            run_id=run_id,
        )
        log.info("run %s finished %s", run_id, status)
        return status

    def _final_records(self, state: RunState, result: RunResult) -> None:
        entries = state.transcript.entries()
        cards = self.cards.many(entry.issue_id for entry in entries)
        summaries = {card_id: card.summary for card_id, card in cards.items()}
        store_transcript(self.db, state.run_id, state.transcript.steps(summaries))
        if result.last_scope is not None:
            config = snapshot_config(result.last_scope)
        else:
            config = {"epic": None, "team": None, "env": None, "build_id": None}
            config["timestamp"] = isoformat(utcnow())
        write_snapshot(self.db, state.run_id, config, state.transcript.log_history())
        if result.status == "done" and result.scope:
            for success_type, artifact in result.successes:
                record_success(
                    self.db, self.events, state.run_id, success_type, artifact
                )

    def _store_terminal(self, run_id: str, result: RunResult) -> tuple[str, bool]:
        """Set the terminal status unless someone else already ended the row.

        Returns the row's status and whether this call ended it.
        """
        with self.db.transaction() as session:
            outcome = session.execute(
                update(RunRow)
                .where(RunRow.id == run_id, RunRow.status == "running")
                .values(status=result.status, end_time=utcnow(), error=result.error)
            )
            if changed_rows(outcome):
                return result.status, True
            current = session.get(RunRow, run_id)
            return (current.status if current else result.status), current is None
