"""A distributed cartd of real processes: API processes, `cartd worker`s, a queue of
their own on a broker and a database of their own, for the tests of distributed mode."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import FileEntry, run_cartd, scratch_database
from tests.support.brokers import BrokerQueue, scratch_queue
from tests.support.cartd_server import CartdServer, CartdWorker


@dataclass
class Cluster:
    """One API process, its workers, a queue of their own and a database of their own."""

    workdir: Path
    env: dict[str, str]
    queue: BrokerQueue
    server: CartdServer
    stack: contextlib.ExitStack
    workers: list[CartdWorker] = field(default_factory=list)
    servers: list[CartdServer] = field(default_factory=list)

    def start_worker(self, concurrency: int = 2, **env: str) -> CartdWorker:
        name = f"worker{len(self.workers)}"
        worker = CartdWorker(self.workdir, {**self.env, **env}, concurrency, name=name)
        self.workers.append(self.stack.enter_context(worker))
        return worker

    def start_server(self) -> CartdServer:
        """Another API process on the same database, broker and volume."""
        server = CartdServer(self.workdir / f"api{len(self.servers) + 1}", self.env)
        self.servers.append(self.stack.enter_context(server))
        return server


@contextlib.contextmanager
def cluster(
    workdir: Path,
    archive_url: str,
    broker: str,
    database: str,
    *,
    workers: int = 1,
    concurrency: int = 2,
    env: dict[str, str] | None = None,
    broker_url: str | None = None,
    database_url: str | None = None,
) -> Iterator[Cluster]:
    """`broker` and `database` name the machine's servers (`database` may be "sqlite");
    `broker_url` and `database_url` (a peewee-style URL of an empty database) point at
    another server of that kind instead, e.g. a private one a test restarts."""
    with contextlib.ExitStack() as stack:
        queue = stack.enter_context(scratch_queue(broker, url=broker_url))
        settings = {
            "ARCHIVE_INTERFACE_URL": archive_url,
            "VOLUME_PATH": str(workdir / "vol"),
            **queue.env(),
            **(env or {}),
        }
        if database_url is not None:
            settings["PEEWEE_URL"] = database_url
        elif database != "sqlite":
            settings["PEEWEE_URL"] = stack.enter_context(scratch_database(database))
        if "PEEWEE_URL" in settings:
            synced = run_cartd("dbsync", env={"HOME": str(workdir), **settings})
            assert synced.returncode == 0, synced.stderr
        server = stack.enter_context(CartdServer(workdir, settings))
        running = Cluster(workdir, settings, queue, server, stack)
        for _ in range(workers):
            running.start_worker(concurrency)
        yield running


def post(client: httpx.Client, uid: str, fileids: list[FileEntry], **extra: Any) -> None:
    response = client.post(f"/{uid}", json={"fileids": fileids, **extra})
    assert response.status_code == 201, response.text
