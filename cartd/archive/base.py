"""What the pipeline needs of an archive, and nothing more."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ArchiveFile:
    """What the archive says of one file."""

    size: int
    mtime: float
    on_disk: bool  # readable now; False while it sits on tape
    message: str = ""


class Archive(Protocol):
    """A store of files by id. Methods raise `TransientArchiveError` or `PermanentArchiveError`."""

    def stage(self, file_id: str) -> None:
        """Ask for the file to be brought to disk; returns at once."""

    def status(self, file_id: str) -> ArchiveFile:
        """Size, modification time and whether the file can be read now."""

    def read(self, file_id: str) -> AbstractContextManager[Iterator[bytes]]:
        """The file's bytes as a stream of chunks; a broken stream raises a transient error."""

    def close(self) -> None:
        """Release connections."""
