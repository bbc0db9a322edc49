"""Project memory: short notes of past decisions, found again by shared words (ENG-13).

Keywords are the distinct lower-cased `[a-z0-9_]+` tokens of the content, stored
space-padded (` a b c `) so a token can be matched with LIKE. Only the newest rows are
kept (5,000 by default).
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import delete, or_, select

from app.db import Database
from app.models.base import dump_json, isoformat, load_json, utcnow
from app.models.runtime import ProjectMemory

MAX_ROWS = 5000
_TOKEN = re.compile(r"[a-z0-9_]+")


def keywords(text: str) -> list[str]:
    """Distinct tokens in order of first appearance."""
    return list(dict.fromkeys(_TOKEN.findall(text.lower())))


class Memory:
    def __init__(self, db: Database, max_rows: int = MAX_ROWS) -> None:
        self.db = db
        self.max_rows = max_rows

    def remember(self, content: str, metadata: dict[str, Any] | None = None) -> int:
        """Store one note and drop the oldest beyond the cap; returns its id."""
        tokens = keywords(content)
        with self.db.transaction() as session:
            row = ProjectMemory(
                content=content,
                metadata_json=dump_json(metadata or {}),
                keywords=f" {' '.join(tokens)} " if tokens else "",
                created_at=utcnow(),
            )
            session.add(row)
            session.flush()
            cutoff = session.scalar(
                select(ProjectMemory.id)
                .order_by(ProjectMemory.id.desc())
                .offset(self.max_rows)
                .limit(1)
            )
            if cutoff is not None:
                session.execute(delete(ProjectMemory).where(ProjectMemory.id <= cutoff))
            return row.id

    def search(self, query: str, limit: int = 5) -> list[dict[str, Any]]:
        """Notes sharing at least one token with `query`, most shared (then newest)
        first; a blank query gives the newest notes."""
        tokens = keywords(query)
        statement = select(ProjectMemory)
        if tokens:
            statement = statement.where(
                or_(
                    *(
                        ProjectMemory.keywords.contains(f" {t} ", autoescape=True)
                        for t in tokens
                    )
                )
            )
        else:
            statement = statement.order_by(ProjectMemory.id.desc()).limit(limit)
        with self.db.reader() as session:
            rows = list(session.scalars(statement))

        wanted = set(tokens)
        scored = [(len(wanted & set(row.keywords.split())), row) for row in rows]
        if tokens:
            scored.sort(key=lambda item: (item[0], item[1].id), reverse=True)
        return [_item(row, score) for score, row in scored[:limit]]


def _item(row: ProjectMemory, score: int) -> dict[str, Any]:
    return {
        "content": row.content,
        "metadata": load_json(row.metadata_json, {}),
        "score": score,
        "timestamp": isoformat(row.created_at),
        "id": row.id,
    }
