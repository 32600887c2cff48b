"""`purge --time-ago`: how an operator's "7 days ago" or ISO date becomes a moment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cartd.errors import InvalidRequest
from cartd.service.admin import parse_time_ago

NOW = datetime(2026, 3, 14, 15, 9, 26, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "ago"),
    [
        ("7 days ago", timedelta(days=7)),
        ("12 hours ago", timedelta(hours=12)),
        ("1 hour", timedelta(hours=1)),
        ("1 hour ago", timedelta(hours=1)),
        ("1.5 weeks ago", timedelta(days=10, hours=12)),
        ("30 seconds ago", timedelta(seconds=30)),
        ("0 seconds ago", timedelta(0)),
        ("45 minutes ago", timedelta(minutes=45)),
        ("1 minute", timedelta(minutes=1)),
        ("2 weeks", timedelta(weeks=2)),
        ("1 day ago", timedelta(days=1)),
        ("0.5 days ago", timedelta(hours=12)),
        ("3days ago", timedelta(days=3)),
        ("  7 days ago  ", timedelta(days=7)),
        ("7 days  ago", timedelta(days=7)),
    ],
)
def test_amounts_ago(text: str, ago: timedelta) -> None:
    assert parse_time_ago(text, NOW) == NOW - ago


@pytest.mark.parametrize(
    "text", ["7 DAYS AGO", "7 Days Ago", "7 dAyS aGo", "12 HOURS", "1.5 Weeks ago"]
)
def test_case_does_not_matter(text: str) -> None:
    assert parse_time_ago(text, NOW) == parse_time_ago(text.lower(), NOW)
    assert parse_time_ago(text, NOW) < NOW


def test_the_result_is_aware_and_in_the_past_of_the_given_now() -> None:
    moment = parse_time_ago("1 second ago", NOW)
    assert moment.tzinfo is not None
    assert moment == NOW - timedelta(seconds=1)


def test_without_now_it_counts_back_from_the_current_time() -> None:
    before = datetime.now(UTC)
    moment = parse_time_ago("1 hour ago")
    after = datetime.now(UTC)
    assert moment.tzinfo is not None
    assert before - timedelta(hours=1) <= moment <= after - timedelta(hours=1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-31T12:00:00+00:00", datetime(2026, 1, 31, 12, 0, tzinfo=UTC)),
        ("2026-01-31T12:00Z", datetime(2026, 1, 31, 12, 0, tzinfo=UTC)),
        ("2026-01-31T12:00:00+02:00", datetime(2026, 1, 31, 10, 0, tzinfo=UTC)),
        ("2026-01-31T12:00:00-05:30", datetime(2026, 1, 31, 17, 30, tzinfo=UTC)),
    ],
)
def test_iso_dates_with_a_timezone_keep_it(text: str, expected: datetime) -> None:
    moment = parse_time_ago(text, NOW)
    assert moment == expected
    assert moment.utcoffset() is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-31T12:00", datetime(2026, 1, 31, 12, 0, tzinfo=UTC)),
        ("2026-01-31T12:00:30", datetime(2026, 1, 31, 12, 0, 30, tzinfo=UTC)),
        ("2026-01-31 12:00:00", datetime(2026, 1, 31, 12, 0, tzinfo=UTC)),
        ("2026-01-31", datetime(2026, 1, 31, tzinfo=UTC)),
        (" 2026-01-31T12:00 ", datetime(2026, 1, 31, 12, 0, tzinfo=UTC)),
    ],
)
def test_naive_iso_dates_are_taken_as_utc(text: str, expected: datetime) -> None:
    moment = parse_time_ago(text, NOW)
    assert moment.tzinfo is UTC
    assert moment == expected


def test_an_iso_date_does_not_depend_on_now() -> None:
    later = NOW + timedelta(days=365)
    assert parse_time_ago("2026-01-31T12:00", NOW) == parse_time_ago("2026-01-31T12:00", later)


@pytest.mark.parametrize(
    "text",
    [
        "yesterday-ish",
        "",
        "   ",
        "days ago",
        "seven days ago",
        "7 fortnights ago",
        "7 months ago",
        "-7 days ago",
        "7 days from now",
        "ago",
        "2026-13-01",
        "2026-01-31T25:00",
    ],
)
def test_nonsense_is_refused_with_a_helpful_message(text: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_time_ago(text, NOW)
    message = caught.value.message
    assert repr(text) in message
    assert "days ago" in message
    assert "ISO" in message
    assert caught.value.status_code == 400
    assert caught.value.__suppress_context__, "no chained ValueError traceback"


@pytest.mark.parametrize("text", ["1000000 days ago", "99999999999 weeks ago"])
def test_an_amount_beyond_the_calendar_is_refused_not_crashed(text: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_time_ago(text, NOW)
