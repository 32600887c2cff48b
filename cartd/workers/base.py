"""The small protocol every runner keeps, embedded or distributed."""

from __future__ import annotations

from typing import Protocol


class Runner(Protocol):
    def submit_file(self, file_id: int, delay: float = 0.0) -> None:
        """Run the file's next step after `delay` seconds."""

    def submit_size(self, cart_id: int) -> None:
        """Ask the archive about a new cart's files, reserve its space, start its files."""

    def submit_finish(self, cart_id: int) -> None:
        """Make a cart whose files are all verified ready."""

    def start(self) -> None:
        """Begin running steps, picking up whatever a previous process left unfinished."""

    def stop(self) -> None:
        """Stop taking steps; steps under way finish."""
