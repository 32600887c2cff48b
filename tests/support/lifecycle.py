"""The one `with` protocol of every server the tests start."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Running:
    """A server started on entering a `with` block and stopped on leaving it."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
