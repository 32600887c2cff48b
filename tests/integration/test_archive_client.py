"""cartd's archive client against an archive that closes idle keep-alive connections."""

from __future__ import annotations

import time

from cartd.archive.http import PacificaArchive
from tests.support.fault_archive import FaultArchive


def test_a_connection_the_archive_closed_while_idle_is_replaced_without_an_error() -> None:
    data = b"kept alive\n" * 1000
    with FaultArchive(keep_alive_seconds=0.1) as archive:
        archive.add("f1", data)
        client = PacificaArchive(archive.url, timeout=5, connections=2)
        try:
            assert client.status("f1").size == len(data)
            time.sleep(0.5)  # the archive closes the idle connection meanwhile
            assert client.status("f1").size == len(data)
            time.sleep(0.5)
            with client.read("f1") as chunks:
                assert b"".join(chunks) == data
        finally:
            client.close()
        assert archive.count("HEAD") == 2
        assert archive.count("GET") == 1
