"""The space policy: grant a cart's bytes, refuse what can never fit, evict whole carts in
least-recently-used order and only as many as needed, or nothing at all."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cartd.space_plan import Candidate, Plan, plan_space


def lru(*holds: int) -> list[Candidate]:
    """Candidates with ids 1, 2, ... holding the given bytes, oldest first."""
    return [Candidate(cart_id=index, holds=size) for index, size in enumerate(holds, start=1)]


@pytest.mark.parametrize("evict", [True, False])
@pytest.mark.parametrize(
    ("need", "reserved"),
    [(0, 0), (10, 0), (60, 40), (100, 0), (1, 99)],
)
def test_grants_when_it_fits_and_evicts_nothing(need: int, reserved: int, evict: bool) -> None:
    plan = plan_space(need, capacity=100, reserved=reserved, candidates=lru(50, 50), evict=evict)
    assert plan == Plan(granted=True)
    assert plan.evict == ()
    assert plan.frees == 0
    assert not plan.too_big


@pytest.mark.parametrize("evict", [True, False])
def test_more_than_the_whole_volume_is_too_big_and_evicts_nothing(evict: bool) -> None:
    plan = plan_space(101, capacity=100, reserved=90, candidates=lru(90, 10, 50), evict=evict)
    assert plan.too_big
    assert not plan.granted
    assert plan.evict == ()
    assert plan.frees == 0


def test_too_big_even_on_an_empty_volume() -> None:
    plan = plan_space(101, capacity=100, reserved=0, candidates=[], evict=True)
    assert plan == Plan(granted=False, too_big=True)


def test_exactly_the_capacity_is_not_too_big() -> None:
    plan = plan_space(100, capacity=100, reserved=0, candidates=[], evict=False)
    assert plan.granted
    assert not plan.too_big


def test_no_room_without_eviction_is_refused_and_nothing_evicted() -> None:
    plan = plan_space(30, capacity=100, reserved=80, candidates=lru(80), evict=False)
    assert plan == Plan(granted=False)
    assert not plan.too_big
    assert plan.evict == ()


def test_eviction_takes_candidates_in_the_given_order_only_as_many_as_needed() -> None:
    # 20 free; needs 50 more: the first two (30 + 25) are enough, the third is kept.
    plan = plan_space(70, capacity=100, reserved=80, candidates=lru(30, 25, 25), evict=True)
    assert plan == Plan(granted=True, evict=(1, 2), frees=55)


def test_eviction_follows_the_order_given_not_the_ids_or_sizes() -> None:
    candidates = [Candidate(7, 10), Candidate(3, 50), Candidate(5, 40)]
    plan = plan_space(60, capacity=100, reserved=100, candidates=candidates, evict=True)
    assert plan.granted
    assert plan.evict == (7, 3)
    assert plan.frees == 60


def test_one_candidate_that_is_just_enough_is_the_only_one_taken() -> None:
    plan = plan_space(40, capacity=100, reserved=100, candidates=lru(40, 40), evict=True)
    assert plan == Plan(granted=True, evict=(1,), frees=40)


def test_eviction_skips_candidates_holding_nothing() -> None:
    candidates = [Candidate(1, 0), Candidate(2, 30), Candidate(3, 0), Candidate(4, 30)]
    plan = plan_space(50, capacity=100, reserved=100, candidates=candidates, evict=True)
    assert plan == Plan(granted=True, evict=(2, 4), frees=60)


def test_eviction_skips_a_candidate_with_negative_holdings() -> None:
    candidates = [Candidate(1, -5), Candidate(2, 10)]
    plan = plan_space(10, capacity=100, reserved=100, candidates=candidates, evict=True)
    assert plan == Plan(granted=True, evict=(2,), frees=10)


def test_nothing_is_evicted_when_even_all_candidates_would_not_make_room() -> None:
    plan = plan_space(70, capacity=100, reserved=90, candidates=lru(20, 30, 0), evict=True)
    assert plan == Plan(granted=False)
    assert plan.evict == ()
    assert plan.frees == 0
    assert not plan.too_big


def test_no_candidates_and_no_room_is_refused() -> None:
    plan = plan_space(1, capacity=100, reserved=100, candidates=[], evict=True)
    assert plan == Plan(granted=False)


def test_candidates_may_be_a_one_shot_iterator_and_are_read_only_as_far_as_needed() -> None:
    seen: list[int] = []

    def candidates() -> Iterator[Candidate]:
        for candidate in lru(30, 30, 30, 30):
            seen.append(candidate.cart_id)
            yield candidate

    plan = plan_space(
        50,
        capacity=100,
        reserved=100,
        candidates=candidates(),
        evict=True,
    )
    assert plan == Plan(granted=True, evict=(1, 2), frees=60)
    assert seen == [1, 2]


def test_free_space_counts_towards_the_need_before_evicting() -> None:
    # 25 free: needs only 5 more, so the first candidate alone (10) is taken.
    plan = plan_space(30, capacity=100, reserved=75, candidates=lru(10, 10), evict=True)
    assert plan == Plan(granted=True, evict=(1,), frees=10)


def test_a_growing_cart_is_too_big_once_what_it_holds_and_needs_passes_the_capacity() -> None:
    # Holds 60 of 100 and asks for 50 more: no eviction can make that fit.
    plan = plan_space(50, capacity=100, reserved=60, candidates=lru(0), evict=True, held=60)
    assert plan == Plan(granted=False, too_big=True)


def test_a_growing_cart_within_the_capacity_is_planned_as_any_other() -> None:
    # Holds 40, another cart 50 (evictable): 10 free, 30 more needed, the other goes.
    plan = plan_space(30, capacity=100, reserved=90, candidates=lru(50), evict=True, held=40)
    assert plan == Plan(granted=True, evict=(1,), frees=50)
