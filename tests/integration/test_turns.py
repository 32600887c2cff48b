"""Small files from a folder archive are pulled by one batch at a time: their pulls are
interpreter work, which threads cannot share. Larger ones are pulled side by side."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from cartd.archive.base import Abort
from cartd.config import load_settings
from cartd.runtime import Runtime, build_runtime
from cartd.service.pipeline import TAKE_TURNS_BELOW
from cartd.status import CartStatus


class Overlaps:
    """Counts the reads of the archive under way at once."""

    def __init__(self, runtime: Runtime) -> None:
        self.lock = threading.Lock()
        self.now = self.most = 0
        self.read = runtime.pipeline.archive.read
        runtime.pipeline.archive.read = self.counted  # type: ignore[method-assign]

    def counted(self, file_id: str, abort: Abort) -> AbstractContextManager[Iterator[bytes]]:
        return self._counted(file_id, abort)

    @contextmanager
    def _counted(self, file_id: str, abort: Abort) -> Iterator[Iterator[bytes]]:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            time.sleep(0.2)  # long enough for another batch's read to start meanwhile
            with self.read(file_id, abort) as chunks:
                yield chunks
        finally:
            with self.lock:
                self.now -= 1


def _two_carts_at_once(tmp_path: Path, size: int) -> int:
    """Two carts of two files of `size` bytes each, stepped by two threads at once; how
    many reads ran at once at most."""
    archive = tmp_path / "archive"
    archive.mkdir()
    settings = load_settings(
        None,
        {},
        database_url=f"sqlite:///{tmp_path / 'cartd.db'}",
        volume_path=tmp_path / "volume",
        archive_url=f"file://{archive}",
    )
    runtime = build_runtime(settings)
    overlaps = Overlaps(runtime)
    carts = []
    try:
        for uid in ("one", "two"):
            order = []
            for index in range(2):
                data = f"{uid} {index}".encode().ljust(size, b".")
                (archive / f"{uid}{index}").write_bytes(data)
                digest = hashlib.sha1(data).hexdigest()
                order.append(
                    {
                        "id": f"{uid}{index}",
                        "path": f"{index}",
                        "hashtype": "sha1",
                        "hashsum": digest,
                    }
                )
            carts.append(runtime.carts.create(uid, json.dumps({"fileids": order}).encode()))
        for cart in carts:
            runtime.pipeline.size_cart(cart.id)
        steps = [
            threading.Thread(
                target=runtime.pipeline.advance,
                args=([file.id for file in runtime.store.files_of(cart.id)],),
            )
            for cart in carts
        ]
        for step in steps:
            step.start()
        for step in steps:
            step.join(30)
        for cart in carts:
            made = runtime.store.get_cart(cart.id)
            assert made is not None
            assert made.status is CartStatus.READY, made
    finally:
        runtime.close()
    return overlaps.most


def test_small_files_from_a_folder_are_pulled_one_batch_at_a_time(tmp_path: Path) -> None:
    assert _two_carts_at_once(tmp_path, 1024) == 1


def test_larger_files_from_a_folder_are_pulled_side_by_side(tmp_path: Path) -> None:
    assert _two_carts_at_once(tmp_path, TAKE_TURNS_BELOW) == 2
