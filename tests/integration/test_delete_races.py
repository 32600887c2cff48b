"""A DELETE that lands while a cart's bundle is being written leaves nothing behind.

The DELETE empties the cart's folder and drops its rows while the step making the
bundle goes on. The step must not leave a bundle, or the folder its first write makes
again, on the volume: nothing would ever remove them. The DELETE is made to land at a
chosen point of the step (the one fault injected); the pipeline, SQLite, the volume
and the archive over HTTP are real.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cartd.config import load_settings
from cartd.records import DownloadRow
from cartd.runtime import Runtime, build_runtime
from cartd.segments import FilePath
from tests.conftest import new_id
from tests.support.driving import drive
from tests.support.fault_archive import FaultArchive


def _land_before_the_first_byte(runtime: Runtime, delete: Callable[[], None]) -> None:
    """The DELETE lands once the cart's space is held, before its layout is read."""
    file_rows = runtime.store.file_rows

    def deleting_first(cart_id: int, page: int = 4096) -> Iterator[DownloadRow]:
        delete()
        return file_rows(cart_id, page)

    runtime.store.file_rows = deleting_first  # type: ignore[method-assign]


def _land_before_the_move_into_place(runtime: Runtime, delete: Callable[[], None]) -> None:
    """The DELETE lands with every byte of the bundle written, before it is moved in."""
    commit = runtime.volume.commit

    def deleting_first(partial: FilePath, final: FilePath, **options: Any) -> None:
        if str(final).endswith("bundle.tar"):
            delete()
        commit(partial, final, **options)

    runtime.volume.commit = deleting_first  # type: ignore[method-assign]


@pytest.mark.parametrize("land", [_land_before_the_first_byte, _land_before_the_move_into_place])
def test_a_delete_landing_while_the_bundle_is_written_leaves_nothing(
    fault_archive: FaultArchive,
    tmp_path: Path,
    land: Callable[[Runtime, Callable[[], None]], None],
) -> None:
    order = []
    for name in ("first.txt", "last.txt"):
        file_id, data = new_id(), f"{name}\n".encode() * 100
        fault_archive.add(file_id, data)
        order.append(
            {"id": file_id, "path": name, "hashtype": "md5",
             "hashsum": hashlib.md5(data).hexdigest()}
        )  # fmt: skip
    settings = load_settings(
        None,
        {},
        database_url=f"sqlite:///{tmp_path / 'cartd.db'}",
        volume_path=tmp_path / "volume",
        archive_url=fault_archive.url,
    )
    runtime = build_runtime(settings)
    deleted: list[bool] = []
    land(runtime, lambda: deleted.append(runtime.carts.delete("raced")))
    try:
        body = json.dumps({"fileids": order, "bundle": True}).encode()
        cart = runtime.carts.create("raced", body)
        drive(runtime, cart.id, time.monotonic() + 30)
        assert deleted == [True], "the DELETE landed on the cart being made"
        assert runtime.store.latest_cart("raced") is None, "a deleted cart came back"
    finally:
        runtime.close()
    assert not (tmp_path / "volume" / "carts" / str(cart.id)).exists()
