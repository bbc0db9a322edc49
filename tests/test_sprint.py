"""Sprint labels and the calendar body."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

from app.engine.sprint import calendar, sprint_for


@pytest.mark.parametrize(
    ("day", "label"),
    [
        (date(2026, 2, 6), "Q1 S6"),
        (date(2026, 2, 9), "Q1 S7"),
        (date(2026, 5, 4), "Q2 S6"),
        (date(2027, 3, 1), "Q1 S10"),
        (date(2026, 1, 1), "Q1 S1"),
        (date(2026, 2, 2), "Q1 S6"),
        (date(2026, 2, 1), "Q1 S5"),
    ],
)
def test_sprint_labels(day, label):
    assert sprint_for(day) == label


@pytest.mark.parametrize(
    ("last_day", "first_day", "before", "after"),
    [
        (date(2026, 3, 29), date(2026, 3, 30), "Q1 S13", "Q2 S1"),
        (date(2025, 12, 28), date(2025, 12, 29), "Q4 S13", "Q1 S1"),
        (date(2027, 3, 28), date(2027, 3, 29), "Q1 S13", "Q2 S1"),
    ],
)
def test_sprint_thirteen_is_followed_by_sprint_one_of_the_next_quarter(
    last_day, first_day, before, after
):
    assert sprint_for(last_day) == before
    assert sprint_for(first_day) == after


def test_datetimes_use_their_date():
    moment = datetime(2026, 2, 9, 23, 59, tzinfo=timezone.utc)

    assert sprint_for(moment) == "Q1 S7"


def test_calendar_on_a_wednesday():
    body = calendar(datetime(2026, 2, 11, 10, 30, tzinfo=timezone.utc))

    assert body == {
        "current_sprint": "Q1 S7",
        "sprint_start": "2026-02-09",
        "sprint_end": "2026-02-13",
    }


def test_calendar_on_a_sunday_ends_on_the_friday_before():
    body = calendar(date(2026, 2, 8))

    assert body == {
        "current_sprint": "Q1 S6",
        "sprint_start": "2026-02-02",
        "sprint_end": "2026-02-06",
    }
