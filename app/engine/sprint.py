"""Sprint labels: thirteen one-week sprints per quarter, counted from a fixed Monday.

The week of 2026-02-02 is sprint 6 of quarter 1. Quarters wrap after four, so the
label repeats every 52 weeks, and dates before the anchor count backwards the same
way (floor division, mathematical modulo).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

ANCHOR_MONDAY = date(2026, 2, 2)
ANCHOR_SPRINT = 6
SPRINTS_PER_QUARTER = 13
QUARTERS = 4


def sprint_for(day: date | datetime) -> str:
    """The `Q<q> S<s>` label of the week holding `day`."""
    n = sprint_number(day)
    quarter = ((n - 1) // SPRINTS_PER_QUARTER) % QUARTERS + 1
    sprint = (n - 1) % SPRINTS_PER_QUARTER + 1
    return f"Q{quarter} S{sprint}"


def sprint_number(day: date | datetime) -> int:
    """Sprints since the anchor, with the anchor week numbered ANCHOR_SPRINT."""
    weeks = (_as_date(day) - ANCHOR_MONDAY).days // 7
    return ANCHOR_SPRINT + weeks


def calendar(now: date | datetime) -> dict[str, str]:
    """The calendar body: current sprint, this week's Monday and this week's Friday."""
    today = _as_date(now)
    weekday = today.weekday()
    return {
        "current_sprint": sprint_for(today),
        "sprint_start": (today - timedelta(days=weekday)).isoformat(),
        "sprint_end": (today + timedelta(days=4 - weekday)).isoformat(),
    }


def _as_date(value: date | datetime) -> date:
    return value.date() if isinstance(value, datetime) else value
