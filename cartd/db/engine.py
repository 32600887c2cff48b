"""Build the database engine from a URL, including the original's peewee URL forms."""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any
from urllib.parse import quote
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError, OperationalError

from cartd.errors import ConfigError, WriteReentered

log = logging.getLogger(__name__)

_SCHEMES = {
    "sqliteext": "sqlite",
    "sqlite": "sqlite",
    "mysql": "mysql+pymysql",
    "mysql+pymysql": "mysql+pymysql",
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "postgresext": "postgresql+psycopg",
    "postgresqlext": "postgresql+psycopg",
}


def database_url(configured: str | None, volume_path: Path) -> str:
    """The SQLAlchemy URL for a configured URL (peewee or SQLAlchemy form), or the default."""
    if not configured:
        # Quoted: SQLAlchemy unquotes the database part, so '%' or '?' in the path survive.
        return f"sqlite:///{quote(str(volume_path / 'cartd.sqlite3'), safe='/')}"
    scheme, sep, rest = configured.partition("://")
    if not sep:
        raise ConfigError(f"database.peewee_url: {configured!r} is not a URL")
    mapped = _SCHEMES.get(scheme.lower(), scheme)
    return f"{mapped}://{rest}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Autocommit at the driver level so that SQLAlchemy's BEGIN below is the only one.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


#: Execution option marking a transaction that will write (see `_sqlite_begin`).
WRITES = "cartd_writes"


def _sqlite_begin(connection: Any) -> None:
    # A transaction that will write takes the write lock up front: a deferred one that
    # reads then writes fails at once with "database is locked" when another writer got
    # in between. Read-only transactions stay deferred so they never wait for writers.
    writes = connection.get_execution_options().get(WRITES, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")


#: One lock per SQLite engine, taken by this process's writers before SQLite's own.
_WRITE_LOCKS: WeakKeyDictionary[Engine, threading.Lock] = WeakKeyDictionary()


#: The engines the current thread has a write transaction open on.
_WRITING = threading.local()


class Writer:
    """Opens transactions that will write.

    On SQLite, writers in this process queue on a lock before asking SQLite for its
    write lock. SQLite's busy handler makes a refused writer sleep 1 to 100 ms before
    trying again, so four workers committing verified files at once spent longer
    asleep than writing; a queued thread starts the moment the previous commit ends.
    Another process (an admin command) still meets SQLite's busy timeout.

    A thread that already writes gets `WriteReentered` instead of a second transaction:
    the lock is not reentrant, and silently nesting would deadlock.
    """

    def __init__(self, engine: Engine) -> None:
        self._key = id(engine)
        self._engine = engine.execution_options(**{WRITES: True})
        self._lock: AbstractContextManager[object] = _WRITE_LOCKS.get(engine) or nullcontext()

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        writing: set[int] | None = getattr(_WRITING, "engines", None)
        if writing is None:
            writing = _WRITING.engines = set()
        if self._key in writing:
            raise WriteReentered("this thread already has a write transaction open")
        writing.add(self._key)
        try:
            with self._lock, self._engine.begin() as connection:
                yield connection
        finally:
            writing.discard(self._key)


def make_engine(
    url: str, *, echo: bool = False, pool_size: int = 8, max_overflow: int | None = None
) -> Engine:
    """An engine for `url`; `max_overflow` defaults to `pool_size`."""
    overflow = pool_size if max_overflow is None else max_overflow
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"database.peewee_url: {exc}") from exc
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            parsed,
            echo=echo,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=overflow,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        _WRITE_LOCKS[engine] = threading.Lock()
        return engine
    engine = create_engine(
        parsed,
        echo=echo,
        pool_size=pool_size,
        max_overflow=overflow,
        pool_recycle=3600,
    )
    _ping_when_closed(engine)
    return engine


def _socket_of(dbapi_connection: Any) -> int | None:
    """The file descriptor of a driver connection's socket, where the driver tells it."""
    fileno = getattr(dbapi_connection, "fileno", None)  # psycopg
    if callable(fileno):
        return int(fileno())
    sock = getattr(dbapi_connection, "_sock", None)  # PyMySQL
    return int(sock.fileno()) if sock is not None else None


def _has_news(fd: int) -> bool:
    """Whether the server sent anything to an idle connection: it says nothing unasked
    unless it is going away (its farewell error, then end of file), or to notify."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR)
    return bool(poller.poll(0))


def _ping_when_closed(engine: Engine) -> None:
    """Ping a pooled connection before use only if its server may have closed it.

    SQLAlchemy's `pool_pre_ping` pings on every checkout: a round-trip per transaction,
    a fifth of a worker's round-trips. A server that stops or restarts closes its
    connections, which a look at the socket sees without asking the server anything
    (a restart can take a quarter of a second, too short for "ping only what sat idle").
    A connection the driver does not show the socket of is pinged every time. A failed
    ping makes the pool open a fresh connection in its place.
    """

    @event.listens_for(engine.pool, "checkout")
    def checked_out(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        fd = _socket_of(dbapi_connection)
        if fd is not None and not _has_news(fd):
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError(f"stale pooled connection: {exc}") from exc


def wait_for_database(engine: Engine, attempts: int, wait: float) -> None:
    """Try to reach the database a few times: it may still be starting beside us."""
    for attempt in range(1, attempts + 1):
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return
        except OperationalError as exc:
            if attempt == attempts:
                raise ConfigError(
                    f"cannot reach the database after {attempts} attempts: {exc.orig}"
                ) from exc
            log.warning("database not reachable (attempt %d of %d); retrying", attempt, attempts)
            time.sleep(wait)
