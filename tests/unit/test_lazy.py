"""Sequences made an item at a time behave as lists do."""

from __future__ import annotations

import pytest

from cartd.lazy import Computed


class Squares(Computed[int]):
    def __init__(self, count: int) -> None:
        self.count = count
        self.made: list[int] = []

    def __len__(self) -> int:
        return self.count

    def item(self, index: int) -> int:
        self.made.append(index)
        return index * index


def test_indexes_and_slices_are_those_of_a_list() -> None:
    squares, reference = Squares(6), [n * n for n in range(6)]
    assert list(squares) == reference
    for index in range(-6, 6):
        assert squares[index] == reference[index]
    for piece in (slice(1, 4), slice(None, None, -2), slice(4, 100), slice(-3, None)):
        assert squares[piece] == reference[piece]
    for outside in (6, -7):
        with pytest.raises(IndexError):
            squares[outside]


def test_only_the_items_read_are_made() -> None:
    squares = Squares(100_000)
    assert squares[-1] == 99_999**2
    assert squares.made == [99_999]
