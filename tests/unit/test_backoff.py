"""Waiting policies grow, then stop growing."""

from __future__ import annotations

import pytest

from cartd.service.backoff import Backoff


def test_delay_doubles_then_caps() -> None:
    backoff = Backoff(initial=0.5, factor=2, cap=30)
    assert [backoff.delay(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]


def test_delay_grows_by_half() -> None:
    backoff = Backoff(initial=1, factor=1.5, cap=300)
    assert backoff.delay(0) == 1
    assert backoff.delay(1) == pytest.approx(1.5)
    assert backoff.delay(2) == pytest.approx(2.25)


def test_delay_never_decreases_and_never_passes_the_cap() -> None:
    backoff = Backoff(initial=1, factor=1.5, cap=300)
    delays = [backoff.delay(n) for n in range(200)]
    assert delays == sorted(delays)
    assert max(delays) == 300
    assert delays[-1] == 300


def test_huge_attempt_numbers_stay_at_the_cap() -> None:
    assert Backoff(initial=1, factor=2, cap=60).delay(10_000) == 60


def test_factor_one_is_a_constant_delay() -> None:
    backoff = Backoff(initial=3, factor=1, cap=60)
    assert {backoff.delay(n) for n in range(10)} == {3}
