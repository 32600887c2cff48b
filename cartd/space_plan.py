"""How much of the volume a cart may have, and which carts make room for it: pure policy,
kept in a leaf module so both the database layer and the pipeline can use it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

NO_SPACE = "No Space Available"


#: Bytes that evicting the given carts together gives back. Not a sum over the carts:
#: carts that name the same archive file keep one copy, which only evicting all of them frees.
Frees = Callable[[Sequence[int]], int]


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
    candidates: Iterable[int],
    frees: Frees,
    evict: bool,
    held: int = 0,
) -> Plan:
    """Grant `need` more bytes to a cart that already holds `held` (a reservation grows as
    the cart's files are sized), out of `capacity` of which `reserved` are held in all
    (`held` included), evicting if allowed.

    A cart whose whole reservation would pass `capacity` is too big: nothing can make room.
    Eviction takes whole carts from the least recently used (the order of `candidates`)
    until together they free enough, then keeps back, newest first, each that is not
    needed: one that frees nothing, alone or with the others, is never taken. When even
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
    freed = 0
    for candidate in candidates:
        chosen.append(candidate)
        freed = frees(tuple(chosen))
        if need <= available + freed:
            break
    else:
        return Plan(granted=False)
    # The last one taken is needed (those before it were not enough); of the others, drop
    # each the rest can do without.
    for candidate in reversed(chosen[:-1]):
        without = [cart for cart in chosen if cart != candidate]
        freed_without = frees(tuple(without))
        if need <= available + freed_without:
            chosen, freed = without, freed_without
    return Plan(granted=True, evict=tuple(chosen), frees=freed)
