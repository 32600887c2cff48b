"""How much of the volume a cart may have, and which carts make room for it: pure policy,
kept in a leaf module so both the database layer and the pipeline can use it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

NO_SPACE = "No Space Available"


@dataclass(frozen=True)
class Candidate:
    """A cart that may be evicted, least recently used first."""

    cart_id: int
    holds: int  # bytes it gives back


@dataclass(frozen=True)
class Plan:
    granted: bool
    evict: tuple[int, ...] = ()
    frees: int = 0
    too_big: bool = False


def plan_space(
    need: int,
    *,
    capacity: int,
    reserved: int,
    candidates: Iterable[Candidate],
    evict: bool,
    held: int = 0,
) -> Plan:
    """Grant `need` more bytes to a cart that already holds `held` (a reservation grows as
    the cart's files are sized), out of `capacity` of which `reserved` are held in all
    (`held` included), evicting if allowed.

    A cart whose whole reservation would pass `capacity` is too big: nothing can make room.
    Eviction takes whole carts in the given order and only as many as needed; when even
    all of them would not make room, nothing is evicted.
    """
    if held + need > capacity:
        return Plan(granted=False, too_big=True)
    available = capacity - reserved
    if need <= available:
        return Plan(granted=True)
    if not evict:
        return Plan(granted=False)
    chosen: list[int] = []
    frees = 0
    for candidate in candidates:
        if candidate.holds <= 0:
            continue
        chosen.append(candidate.cart_id)
        frees += candidate.holds
        if need <= available + frees:
            return Plan(granted=True, evict=tuple(chosen), frees=frees)
    return Plan(granted=False)
