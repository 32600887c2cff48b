"""Small files are made durable a group at a time, with one sync of the volume; a group
whose sync fails is never recorded verified: each of its files is pulled again.

The failure is injected: a real write-back error needs a failing disk. Everything else
is real (the pipeline, SQLite, the volume, the archive over HTTP)."""

from __future__ import annotations

import errno
import hashlib
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from cartd.config import load_settings
from cartd.libc import filesystem_type, sync_filesystem
from cartd.runtime import build_runtime
from cartd.status import CartStatus
from cartd.storage import VolumeSync, syncs_whole
from tests.conftest import new_id
from tests.support.driving import drive
from tests.support.fault_archive import FaultArchive
from tests.support.tars import tar_files

pytestmark = pytest.mark.skipif(
    sync_filesystem is None or not syncs_whole(filesystem_type(tempfile.gettempdir())),
    reason="no syncfs to rely on here",
)


class FailingOnce(VolumeSync):
    """A group sync whose write-back fails, as a dying disk's would."""

    def sync(self) -> None:
        raise OSError(errno.EIO, "Input/output error")


def test_a_group_whose_sync_fails_is_pulled_again_and_its_cart_still_made(
    fault_archive: FaultArchive, tmp_path: Path
) -> None:
    contents: dict[str, bytes] = {}
    order = []
    for index in range(6):
        file_id, data = new_id(), f"small file {index}\n".encode() * 50
        fault_archive.add(file_id, data)
        contents[f"d/{index}.txt"] = data
        order.append(
            {
                "id": file_id,
                "path": f"d/{index}.txt",
                "hashtype": "sha1",
                "hashsum": hashlib.sha1(data).hexdigest(),
            }
        )
    settings = load_settings(
        None,
        {},
        database_url=f"sqlite:///{tmp_path / 'cartd.db'}",
        volume_path=tmp_path / "volume",
        archive_url=fault_archive.url,
        retry_initial=0.05,
    )
    runtime = build_runtime(settings)
    syncs: list[VolumeSync] = []

    def group_sync() -> VolumeSync:
        made = (FailingOnce if not syncs else VolumeSync)(str(tmp_path / "volume"))
        syncs.append(made)
        return made

    runtime.pipeline.volume.group_sync = group_sync  # type: ignore[method-assign]
    try:
        cart = runtime.carts.create("synced", json.dumps({"fileids": order}).encode())
        drive(runtime, cart.id, time.monotonic() + 30, pause=0.02)
        ready = runtime.store.get_cart(cart.id)
        assert ready is not None
        assert ready.status is CartStatus.READY, ready
        served = b"".join(runtime.carts.stream(runtime.carts.download("synced", "x")))
    finally:
        runtime.close()
    assert tar_files(served) == {f"x/{path}": data for path, data in contents.items()}
    assert isinstance(syncs[0], FailingOnce), "the small files were synced as a group"
    gets = Counter(file_id for _, method, file_id in fault_archive.requests if method == "GET")
    assert set(gets.values()) == {2}, f"each file of the failed group is pulled again: {gets}"
