"""What a run, an epic inside it and one attempt know while the engine works.

`RunState` is shared by the attempt threads of a run, so everything mutable on it
sits behind its lock. `EpicScope` is fixed once an epic's assets are loaded.
`AttemptContext` is one card's seat, roles and tools for one attempt.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from app.config import Settings
from app.db import Database
from app.engine.assets import AssetStore, Environment, Epic, Organization, Role, Team
from app.engine.cards import CardRepository
from app.engine.memory import Memory
from app.engine.records import Transcript
from app.events import EventLog
from app.models.runtime import Session as RunRow


@dataclass(frozen=True)
class TurnRecord:
    """One turn of a card in this run, replayed to the model as context."""

    reply: str
    results: list[dict[str, Any]]


@dataclass
class RunState:
    settings: Settings
    db: Database
    events: EventLog
    store: AssetStore
    cards: CardRepository
    memory: Memory
    run_id: str
    organization: Organization
    transcript: Transcript = field(default_factory=Transcript)
    lock: threading.Lock = field(default_factory=threading.Lock)
    violations: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    children: set[str] = field(default_factory=set)
    turns: dict[str, list[TurnRecord]] = field(
        default_factory=lambda: defaultdict(list)
    )
    providers: dict[tuple[str, str, str], Any] = field(default_factory=dict)
    turn_count: int = 0
    token_count: int = 0
    _halted: bool = False

    def halt_requested(self) -> bool:
        """Whether the run was asked to halt (read from its row; sticky once true)."""
        if self._halted:
            return True
        with self.db.reader() as session:
            flag = session.scalar(
                select(RunRow.halt_requested).where(RunRow.id == self.run_id)
            )
        self._halted = bool(flag)
        return self._halted

    def add_violation(self, card_id: str) -> int:
        with self.lock:
            self.violations[card_id] += 1
            return self.violations[card_id]

    def count_turn(self, tokens: int) -> None:
        with self.lock:
            self.turn_count += 1
            self.token_count += tokens

    def record_turn(self, card_id: str, record: TurnRecord) -> None:
        with self.lock:
            self.turns[card_id].append(record)

    def recent_turns(self, card_id: str, window: int) -> list[TurnRecord]:
        with self.lock:
            return list(self.turns[card_id][-window:])


@dataclass(frozen=True)
class EpicScope:
    """One epic of a run: its assets, build and workspace."""

    epic: Epic
    department: str
    team: Team
    environment: Environment
    build_id: str
    workspace: Path
    references: tuple[Path, ...]
    config_root: Path

    @property
    def idesign(self) -> bool:
        return self.epic.idesign


@dataclass(frozen=True)
class AttemptContext:
    run: RunState
    scope: EpicScope
    card_id: str
    seat_key: str
    roles: tuple[Role, ...]
    review: bool
    visible_tools: tuple[str, ...]

    @property
    def role_names(self) -> tuple[str, ...]:
        return tuple(role.name for role in self.roles)

    @property
    def role(self) -> str:
        """The acting role shown in events: the seat's first role."""
        return self.roles[0].name
