"""The space policy: grant a cart's bytes, refuse what can never fit, evict whole carts in
least-recently-used order and only as many as needed, or nothing at all."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pytest

from cartd.space_plan import Plan, plan_space


@dataclass
class Carts:
    """A model of the volume: each cart holds bytes of its own and names shared archive
    files, which only evicting every cart naming them frees."""

    own: dict[int, int]
    names: dict[int, set[str]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    asked: list[tuple[int, ...]] = field(default_factory=list)

    def frees(self, chosen: Sequence[int]) -> int:
        self.asked.append(tuple(chosen))
        gone = set(chosen)
        kept = {name for cart, names in self.names.items() if cart not in gone for name in names}
        named = {name for cart in gone for name in self.names.get(cart, set())}
        return sum(self.own[cart] for cart in gone) + sum(self.sizes[name] for name in named - kept)


def lru(*holds: int) -> Carts:
    """Carts with ids 1, 2, ... holding the given bytes alone, oldest first."""
    return Carts(own=dict(enumerate(holds, start=1)))


def plan(need: int, carts: Carts, *, reserved: int, evict: bool = True, held: int = 0) -> Plan:
    """Plan in a volume of 100 with every cart of the model a candidate, by id."""
    return plan_space(
        need,
        capacity=100,
        reserved=reserved,
        candidates=sorted(carts.own),
        frees=carts.frees,
        evict=evict,
        held=held,
    )


@pytest.mark.parametrize("evict", [True, False])
@pytest.mark.parametrize(
    ("need", "reserved"),
    [(0, 0), (10, 0), (60, 40), (100, 0), (1, 99)],
)
def test_grants_when_it_fits_and_evicts_nothing(need: int, reserved: int, evict: bool) -> None:
    carts = lru(50, 50)
    assert plan(need, carts, reserved=reserved, evict=evict) == Plan(granted=True)
    assert carts.asked == []


@pytest.mark.parametrize("evict", [True, False])
def test_more_than_the_whole_volume_is_too_big_and_evicts_nothing(evict: bool) -> None:
    assert plan(101, lru(90, 10, 50), reserved=90, evict=evict) == Plan(False, too_big=True)


def test_too_big_even_on_an_empty_volume() -> None:
    assert plan(101, lru(), reserved=0) == Plan(granted=False, too_big=True)


def test_exactly_the_capacity_is_not_too_big() -> None:
    assert plan(100, lru(), reserved=0, evict=False) == Plan(granted=True)


def test_no_room_without_eviction_is_refused_and_nothing_evicted() -> None:
    assert plan(30, lru(80), reserved=80, evict=False) == Plan(granted=False)


def test_eviction_takes_carts_least_recently_used_first_only_as_many_as_needed() -> None:
    # 20 free; needs 50 more: the first two (30 + 25) are enough, the third is kept.
    assert plan(70, lru(30, 25, 25), reserved=80) == Plan(True, evict=(1, 2), frees=55)


def test_eviction_follows_the_order_given_not_the_ids_or_sizes() -> None:
    carts = Carts(own={7: 10, 3: 50, 5: 40})
    made = plan_space(
        60, capacity=100, reserved=100, candidates=[7, 3, 5], frees=carts.frees, evict=True
    )
    assert made == Plan(granted=True, evict=(7, 3), frees=60)


def test_one_cart_that_is_just_enough_is_the_only_one_taken() -> None:
    assert plan(40, lru(40, 40), reserved=100) == Plan(True, evict=(1,), frees=40)


def test_eviction_keeps_back_carts_that_free_nothing() -> None:
    assert plan(50, lru(0, 30, 0, 30), reserved=100) == Plan(True, evict=(2, 4), frees=60)


def test_an_older_cart_the_newer_ones_can_do_without_is_kept() -> None:
    # The first is taken on the way, but the second and third free enough without it.
    assert plan(50, lru(10, 30, 20), reserved=100) == Plan(True, evict=(2, 3), frees=50)


def test_carts_sharing_all_their_files_are_evicted_together() -> None:
    # Each frees nothing alone (the other names the same 50), both together free it.
    carts = Carts(own={1: 0, 2: 0, 3: 0}, names={1: {"x"}, 2: {"x"}}, sizes={"x": 50})
    assert plan(40, carts, reserved=100) == Plan(True, evict=(1, 2), frees=50)


def test_a_shared_file_is_freed_only_with_every_cart_naming_it() -> None:
    # The third cart also names x and is not evicted: the first two free only their own.
    carts = Carts(
        own={1: 10, 2: 10},
        names={1: {"x"}, 2: {"x"}, 3: {"x"}},
        sizes={"x": 50},
    )
    assert plan(30, carts, reserved=100) == Plan(granted=False)


def test_a_sharer_that_is_not_needed_once_its_partner_is_gone_is_kept() -> None:
    # 1 and 3 share x; 2 frees its own 20. Taking 1, 2 and 3 frees 80; without 2, 1 and 3
    # free 60: enough, so 2 stays. Without 1, 3 alone would free only its own 10.
    carts = Carts(own={1: 0, 2: 20, 3: 10}, names={1: {"x"}, 3: {"x"}}, sizes={"x": 50})
    assert plan(60, carts, reserved=100) == Plan(True, evict=(1, 3), frees=60)


def test_nothing_is_evicted_when_even_all_carts_would_not_make_room() -> None:
    assert plan(70, lru(20, 30, 0), reserved=90) == Plan(granted=False)


def test_no_candidates_and_no_room_is_refused() -> None:
    assert plan(1, lru(), reserved=100) == Plan(granted=False)


def test_candidates_may_be_a_one_shot_iterator_and_are_read_only_as_far_as_needed() -> None:
    carts = lru(30, 30, 30, 30)
    seen: list[int] = []

    def candidates() -> Iterator[int]:
        for cart in sorted(carts.own):
            seen.append(cart)
            yield cart

    made = plan_space(
        50, capacity=100, reserved=100, candidates=candidates(), frees=carts.frees, evict=True
    )
    assert made == Plan(granted=True, evict=(1, 2), frees=60)
    assert seen == [1, 2]


def test_free_space_counts_towards_the_need_before_evicting() -> None:
    # 25 free: needs only 5 more, so the first cart alone (10) is taken.
    assert plan(30, lru(10, 10), reserved=75) == Plan(True, evict=(1,), frees=10)


def test_a_growing_cart_is_too_big_once_what_it_holds_and_needs_passes_the_capacity() -> None:
    # Holds 60 of 100 and asks for 50 more: no eviction can make that fit.
    assert plan(50, lru(0), reserved=60, held=60) == Plan(granted=False, too_big=True)


def test_a_growing_cart_within_the_capacity_is_planned_as_any_other() -> None:
    # Holds 40, another cart 50 (evictable): 10 free, 30 more needed, the other goes.
    assert plan(30, lru(50), reserved=90, held=40) == Plan(True, evict=(1,), frees=50)
