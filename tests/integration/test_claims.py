"""Every step delivered twice, to two processes sharing a database and a volume: each
archive file is still pulled exactly once (the claim on file rows).

Two runtimes (as two worker processes build them) on one PostgreSQL database and one
volume both take every step of a cart, at the same time, from two threads: the worst
a broker's redelivery can do.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from cartd.config import load_settings
from cartd.db import migrate
from cartd.runtime import build_runtime, open_engine
from cartd.status import CartStatus
from tests.conftest import new_id, scratch_database
from tests.support.driving import drive
from tests.support.fault_archive import FaultArchive, Faults
from tests.support.tars import tar_files

pytestmark = pytest.mark.postgres


def test_steps_delivered_twice_pull_every_file_once(
    fault_archive: FaultArchive, tmp_path: Path
) -> None:
    contents = {}
    fileids = []
    for index in range(24):
        file_id, data = new_id(), f"{index}\n".encode() * 3000
        fault_archive.add(file_id, data, faults=Faults(delay_first=1, delay_seconds=0.1))
        contents[f"d/{index}.bin"] = data
        md5 = hashlib.md5(data).hexdigest()
        fileids.append(f'{{"id": "{file_id}", "path": "d/{index}.bin", "hashtype": "md5", '
                       f'"hashsum": "{md5}"}}')  # fmt: skip
    body = f'{{"fileids": [{", ".join(fileids)}]}}'.encode()
    with scratch_database("postgres") as url:
        settings = load_settings(
            None,
            {},
            database_url=url,
            volume_path=tmp_path / "volume",
            archive_url=fault_archive.url,
        )
        engine = open_engine(settings)
        migrate.upgrade(engine)
        engine.dispose()
        runtimes = [build_runtime(settings), build_runtime(settings)]
        try:
            cart = runtimes[0].carts.create("twice", body)
            deadline = time.monotonic() + 60
            workers = [
                threading.Thread(target=drive, args=(runtime, cart.id, deadline))
                for runtime in runtimes
            ]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            current = runtimes[1].store.get_cart(cart.id)
            assert current is not None
            assert current.status is CartStatus.READY, current
            download = runtimes[1].carts.download("twice", "x")
            served = b"".join(runtimes[1].carts.stream(download))
        finally:
            for runtime in runtimes:
                runtime.close()
    assert tar_files(served) == {f"x/{path}": data for path, data in contents.items()}
    gets = Counter(file_id for _, method, file_id in fault_archive.requests if method == "GET")
    assert len(gets) == 24
    assert set(gets.values()) == {1}, f"files pulled more than once: {gets}"
