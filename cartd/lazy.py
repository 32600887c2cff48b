"""Sequences whose items are made when one is asked for.

A download of a cart of 100,000 files needs, for each file, a path on the volume, a
tar member, the span of its bytes; held as objects they cost a hundred megabytes, held
as a few columns (arrays, one shared string) a tenth of it. These sequences make an
item from the columns when it is read.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import TypeVar, overload

Item = TypeVar("Item")


class Computed(Sequence[Item]):
    """A `Sequence` of `__len__` items, each made by `item`."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def item(self, index: int) -> Item:
        """The item at `index`, from 0 to `len(self) - 1`."""

    @overload
    def __getitem__(self, index: int) -> Item: ...

    @overload
    def __getitem__(self, index: slice) -> list[Item]: ...

    def __getitem__(self, index: int | slice) -> Item | list[Item]:
        if isinstance(index, slice):
            return [self.item(one) for one in range(*index.indices(len(self)))]
        count = len(self)
        if not -count <= index < count:
            raise IndexError(index)
        return self.item(index + count if index < 0 else index)
