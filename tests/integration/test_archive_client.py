"""cartd's archive client against archives that close idle connections or stall."""

from __future__ import annotations

import threading
import time

import pytest

from cartd.archive.base import Abort
from cartd.archive.http import PacificaArchive
from cartd.errors import CartGone
from tests.support.fault_archive import FaultArchive, Faults


def test_a_connection_the_archive_closed_while_idle_is_replaced_without_an_error() -> None:
    data = b"kept alive\n" * 1000
    with FaultArchive(keep_alive_seconds=0.1) as archive:
        archive.add("f1", data)
        client = PacificaArchive(archive.url, timeout=5, connections=2)
        try:
            assert client.status("f1", Abort()).size == len(data)
            time.sleep(0.5)  # the archive closes the idle connection meanwhile
            assert client.status("f1", Abort()).size == len(data)
            time.sleep(0.5)
            with client.read("f1", Abort()) as chunks:
                assert b"".join(chunks) == data
        finally:
            client.close()
        assert archive.count("HEAD") == 2
        assert archive.count("GET") == 1


def test_an_abort_cuts_a_stalled_request_at_once_and_refuses_the_next() -> None:
    data = b"stalled\n" * 1000
    with FaultArchive() as archive:
        archive.add("slow", data, faults=Faults(delay_first=1, delay_seconds=30))
        client = PacificaArchive(archive.url, timeout=60, connections=1)
        abort = Abort()
        try:
            timer = threading.Timer(0.3, abort.abort)
            timer.start()
            began = time.monotonic()
            with pytest.raises(CartGone), client.read("slow", abort) as chunks:
                b"".join(chunks)
            assert time.monotonic() - began < 5, "the stalled GET was not cut"
            timer.join()
            with pytest.raises(CartGone):
                client.status("slow", abort)
            assert archive.count("HEAD") == 0
            # The client itself still works for other carts' requests.
            with client.read("slow", Abort()) as chunks:
                assert b"".join(chunks) == data
        finally:
            client.close()
