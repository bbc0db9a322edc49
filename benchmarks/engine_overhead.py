"""The engine's own overhead per turn, on SQLite, with a scripted model.

A scripted epic of 20 issues (a coder turn that writes a file and asks for review,
then a reviewer turn that sets `done`) runs in a fresh data directory. Scripted
replies cost no model time, so the wall time of a run divided by its turns is what
the engine itself spends per turn: prompts, parsing, tools, card writes, events,
snapshots. Not part of `make test`.

    .venv/bin/python -m benchmarks.engine_overhead [--repeat 3] [--concurrency 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import event

from app.config import Settings
from app.db import Database
from app.engine.runner import Engine
from app.events import EventLog
from app.migrate import upgrade
from app.runs import enqueue_run

ISSUES = 20
TARGET_MS = 20.0


def write_assets(config: Path) -> None:
    """Team, environment, script and the 20-issue epic in a config dir."""
    assets = {
        "teams/bench_team": {
            "seats": {
                "builder": {"name": "Builder", "roles": ["coder"]},
                "verifier": {"name": "Verifier", "roles": ["integrity_guard"]},
            }
        },
        "environments/bench_env": {"provider": "scripted", "model": "scripted:bench"},
        "scripts/bench": {
            "schema": "orket-script/1",
            "replies": {
                f"BENCH-{n}/coder": [
                    [
                        {
                            "tool": "write_file",
                            "args": {
                                "path": f"agent_output/module_{n}.py",
                                "content": f"def value():\n    return {n}\n",
                            },
                        },
                        {
                            "tool": "update_issue_status",
                            "args": {"status": "code_review"},
                        },
                    ]
                ]
                for n in range(1, ISSUES + 1)
            }
            | {
                "integrity_guard": [
                    {"tool": "update_issue_status", "args": {"status": "done"}}
                ]
            },
        },
        "epics/bench": {
            "name": "Engine overhead benchmark",
            "team": "bench_team",
            "environment": "bench_env",
            # More issues than the complexity gate allows without iDesign.
            "architecture_governance": {"idesign": True},
            "issues": [
                {"id": f"BENCH-{n}", "summary": f"Module {n}", "seat": "builder"}
                for n in range(1, ISSUES + 1)
            ],
        },
    }
    for name, data in assets.items():
        path = config / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data), encoding="utf-8")


@dataclass
class Measure:
    wall_ms: float
    cpu_ms: float
    turns: int
    statements: int
    events: int


def run_once(settings: Settings, db: Database, events: EventLog) -> Measure:
    """One run of the epic from a reset."""
    answer = enqueue_run(
        settings,
        db,
        events,
        target="bench",
        reset=True,
        source="cli",
        as_running_worker="cli:benchmark:0",
    )
    seen: list[str] = []
    events.add_listener(
        lambda record: (
            seen.append(record["event"])
            if record["run_id"] == answer["session_id"]
            else None
        )
    )
    statements = [0]

    def count(*_args: object) -> None:
        statements[0] += 1

    event.listen(db.engine, "before_cursor_execute", count)
    started, cpu_started = time.perf_counter(), time.process_time()
    status = Engine(settings, db, events).run(answer["session_id"])
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    event.remove(db.engine, "before_cursor_execute", count)
    if status != "done":
        raise SystemExit(f"benchmark run ended {status}, not done")
    return Measure(
        wall * 1000, cpu * 1000, seen.count("turn_complete"), statements[0], len(seen)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=1)
    options = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="orket-bench-") as folder:
        root = Path(folder)
        settings = Settings(
            _env_file=None,
            data_dir=root / "data",
            config_dir=root / "config",
            model_dir=root / "model",
            api_key="benchmark",
            webhook_secret="benchmark",
            epic_concurrency=options.concurrency,
            max_ticks=100,
            log_level="warning",
        )
        write_assets(settings.config_path)
        upgrade("runtime", settings.runtime_db_url)
        db = Database(settings.runtime_db_url, "runtime")
        events = EventLog(settings, db)
        try:
            measures = [run_once(settings, db, events) for _ in range(options.repeat)]
        finally:
            db.dispose()

    for number, m in enumerate(measures, start=1):
        print(
            f"run {number}: {m.turns} turns, wall {m.wall_ms / m.turns:.2f} ms/turn, "
            f"cpu {m.cpu_ms / m.turns:.2f} ms/turn, "
            f"{m.statements / m.turns:.1f} SQL statements and "
            f"{m.events / m.turns:.1f} events per turn"
        )
    wall = statistics.median(m.wall_ms / m.turns for m in measures)
    cpu = statistics.median(m.cpu_ms / m.turns for m in measures)
    verdict = "within" if wall < TARGET_MS else "ABOVE"
    print(
        f"engine overhead: {wall:.2f} ms/turn wall, {cpu:.2f} ms/turn cpu (median of "
        f"{options.repeat}, SQLite, concurrency {options.concurrency}); {verdict} the "
        f"{TARGET_MS:.0f} ms target"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
