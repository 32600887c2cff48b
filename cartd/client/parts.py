"""FILE.part, and what is kept beside it so that the same command run again resumes it.

The download is written to `FILE.part`; `FILE.part.json` says which server, cart and
order it belongs to and the tar's validator (its `ETag`, else its `Last-Modified`), sent
as `If-Range` on resuming so that a tar that changed comes whole. `FILE` appears only by
renaming a part that was verified whole; one that failed verification becomes `FILE.bad`.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

PART = ".part"
STATE = ".part.json"
BAD = ".bad"


@dataclass(frozen=True)
class Resumable:
    """What FILE.part belongs to."""

    server: str
    uid: str
    order: str  # the order's digest (`LoadedOrder.digest`)
    validator: str | None = None  # the tar's ETag or Last-Modified, once known

    def with_validator(self, validator: str | None) -> Resumable:
        return replace(self, validator=validator)


class PartFiles:
    """FILE, FILE.part, FILE.part.json and FILE.bad of one output file."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.part = target.with_name(target.name + PART)
        self.state = target.with_name(target.name + STATE)
        self.bad = target.with_name(target.name + BAD)

    @classmethod
    def find(cls, folder: Path, server: str, order: str) -> PartFiles | None:
        """The newest part in `folder` left by an earlier run of this order from this
        server: what `cartd get` run again with no `--uid` or `--output` takes up."""
        found: list[tuple[float, PartFiles]] = []
        for state in folder.glob(f"*{STATE}"):
            parts = cls(state.with_name(state.name[: -len(STATE)]))
            kept = parts.load()
            if kept is not None and (kept.server, kept.order) == (server, order):
                found.append((state.stat().st_mtime, parts))
        return max(found, key=lambda item: item[0])[1] if found else None

    def load(self) -> Resumable | None:
        try:
            document = json.loads(self.state.read_text())
            return Resumable(**document)
        except (OSError, ValueError, TypeError):
            return None

    def save(self, state: Resumable) -> None:
        """Write the state beside the part, whole or not at all."""
        fresh = self.state.with_name(self.state.name + ".new")
        fresh.write_text(json.dumps(asdict(state)))
        fresh.replace(self.state)

    def size(self) -> int:
        try:
            return self.part.stat().st_size
        except FileNotFoundError:
            return 0

    def discard(self) -> None:
        """Forget any earlier download into this file (FILE itself is left)."""
        for path in (self.part, self.state):
            path.unlink(missing_ok=True)

    def complete(self) -> None:
        """The verified part becomes FILE, durably, and the state goes."""
        with self.part.open("rb") as handle:
            os.fsync(handle.fileno())
        self.part.replace(self.target)
        _sync_folder(self.target.parent)
        self.state.unlink(missing_ok=True)

    def reject(self) -> Path:
        """A part that failed verification becomes FILE.bad (kept to look into, never
        taken for the download nor resumed)."""
        self.part.replace(self.bad)
        self.state.unlink(missing_ok=True)
        return self.bad


def _sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
