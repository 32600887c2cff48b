"""The small protocol every runner keeps, embedded or distributed.

A runner calls the pipeline's steps (`Pipeline.size_cart`, `advance`, `finish`) and
schedules what they return: each file's next step after its delay, and the files a
step says may start now. The pipeline never calls back into its runner.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class Runner(Protocol):
    def submit_file(self, file_id: int, delay: float = 0.0) -> None:
        """Run the file's next step after `delay` seconds."""

    def submit_files(self, file_ids: Iterable[int], delay: float = 0.0) -> None:
        """Run these files' next steps after `delay` seconds, shared out among the workers."""

    def submit_size(self, cart_id: int, delay: float = 0.0) -> None:
        """Start a new cart's files; each batch of them sizes, reserves and pulls its own."""

    def submit_finish(self, cart_id: int, delay: float = 0.0) -> None:
        """Make a cart whose files are all verified ready."""

    def start(self) -> None:
        """Begin running steps, picking up whatever a previous process left unfinished."""

    def stop(self) -> None:
        """Stop taking steps; steps under way finish."""
