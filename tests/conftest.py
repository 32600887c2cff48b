"""Shared fixtures: real archives, real cartd processes, real HTTP clients."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.support.archive_interface import ArchiveInterface
from tests.support.cartd_server import CartdServer
from tests.support.cells import CELLS
from tests.support.fault_archive import FaultArchive

_ids = itertools.count(1)

FileEntry = dict[str, Any]

#: The modules whose tests run longest (schemathesis, the benchmarks' smoke runs), collected
#: first: the suite runs in two processes (pytest-xdist, a file at a time), and a long file
#: started last would leave one process running alone at the end.
LONG_MODULES = ("test_openapi_conformance.py", "test_bench_smoke.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the long modules first, keeping the order of everything else."""
    items.sort(key=lambda item: item.path.name not in LONG_MODULES)


def new_id(prefix: str = "f") -> str:
    """A file id no other test uses (the archives are shared per session)."""
    return f"{prefix}{os.getpid()}x{next(_ids)}x{uuid.uuid4().hex[:6]}"


def entry(file_id: str, data: bytes, path: str, hashtype: str = "md5") -> FileEntry:
    """One `fileids` entry of a POST body for `data` stored as `file_id`."""
    return {
        "id": file_id,
        "path": path,
        "hashtype": hashtype,
        "hashsum": hashlib.new(hashtype, data).hexdigest(),
    }


@pytest.fixture(scope="session")
def archive_interface() -> Iterator[ArchiveInterface]:
    with ArchiveInterface() as archive:
        yield archive


@pytest.fixture
def fault_archive() -> Iterator[FaultArchive]:
    with FaultArchive() as archive:
        yield archive


ServerFactory = Callable[..., CartdServer]


@pytest.fixture
def cartd_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start cartd processes with given settings; all are stopped at the end."""
    servers: list[CartdServer] = []

    def start(archive_url: str, workdir: Path | None = None, **env: str) -> CartdServer:
        workdir = workdir or tmp_path / f"cartd{len(servers)}"
        settings = {
            "ARCHIVE_INTERFACE_URL": archive_url,
            "VOLUME_PATH": str(workdir / "volume"),
            **env,
        }
        server = CartdServer(workdir, settings)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


DATABASE_SERVERS = {
    "postgres": (
        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        "postgres://postgres@127.0.0.1:5432/{name}",
    ),
    "mysql": ("mysql+pymysql://root@127.0.0.1:3306/", "mysql://root@127.0.0.1:3306/{name}"),
}


@contextlib.contextmanager
def scratch_database(kind: str) -> Iterator[str]:
    """A new, empty database on the machine's real server, as a peewee-style URL; dropped after."""
    admin_url, url = DATABASE_SERVERS[kind]
    name = f"cartd_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield url.format(name=name)
    finally:
        drop = f"DROP DATABASE {name}" + (" WITH (FORCE)" if kind == "postgres" else "")
        with admin.connect() as connection:
            connection.execute(text(drop))
        admin.dispose()


def run_cartd(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a `cartd` command as an operator would, with only the given environment."""
    return subprocess.run(
        [sys.executable, "-m", "cartd", *args],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(
    scope="module",
    params=["sqlite", *CELLS],
)
def ai_server(
    request: pytest.FixtureRequest,
    archive_interface: ArchiveInterface,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[CartdServer]:
    """One cartd against the real archive interface for a whole module: embedded (on
    SQLite), and distributed (an API process and a `cartd worker`) on each broker, which
    puts the API on PostgreSQL and on MariaDB. The embedded runner on those two servers
    is tested end to end by test_databases.py and test_processes.py."""
    workdir = tmp_path_factory.mktemp("cartd")
    if isinstance(request.param, tuple):
        from tests.support.cluster import cluster  # imports this module: import it late

        broker, database = request.param
        with cluster(workdir, archive_interface.url, broker, database) as running:
            yield running.server
        return
    env = {"ARCHIVE_INTERFACE_URL": archive_interface.url, "VOLUME_PATH": str(workdir / "vol")}
    with CartdServer(workdir, env) as server:
        yield server


@pytest.fixture
def client(ai_server: CartdServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ai_server.url, timeout=30.0) as http:
        yield http


@pytest.fixture
def store_files(archive_interface: ArchiveInterface) -> Callable[..., list[FileEntry]]:
    """Put files in the real archive; return the `fileids` entries that order them."""

    def store(
        contents: dict[str, bytes], hashtype: str = "md5", mtime: float | None = None
    ) -> list[FileEntry]:
        entries = []
        for path, data in contents.items():
            file_id = new_id()
            archive_interface.put(file_id, data, mtime=mtime or time.time() - 86400)
            entries.append(entry(file_id, data, path, hashtype))
        return entries

    return store
