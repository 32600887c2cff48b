"""Counts a cartd process's database calls for the benchmark; cartd itself never loads it.

`bench/distributed.py` starts cartd processes with this folder on `PYTHONPATH` and
`CARTD_BENCH_PROBE` naming a folder: Python imports this module at start-up, which
listens to SQLAlchemy's events on every engine and pool and writes the counts to
`<CARTD_BENCH_PROBE>/<pid>.json` (at most five times a second, and at exit). The
benchmark reads them to estimate the database round-trips of each process.

BEGIN, COMMIT and ROLLBACK are counted only on a connection not in autocommit (where
the driver sends nothing for them), and pings where the dialect sends one.
"""

from __future__ import annotations

import os


def _install(folder: str) -> None:
    import atexit
    import itertools
    import json
    import threading
    from typing import Any

    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import Pool

    counters = {
        name: itertools.count()  # next() on a count is atomic under the GIL
        for name in (
            "statements",
            "begins",
            "commits",
            "rollbacks",
            "checkouts",
            "resets",
            "pings",
        )
    }
    seen = dict.fromkeys(counters, 0)

    def counting(name: str) -> Any:
        counter = counters[name]

        def listener(*_args: Any, **_kwargs: Any) -> None:
            next(counter)

        return listener

    def autocommit(connection: Any) -> bool:
        dbapi = connection.connection.dbapi_connection
        flag = getattr(dbapi, "autocommit", False)  # psycopg: an attribute
        return bool(dbapi.get_autocommit() if callable(flag) else flag)  # PyMySQL: a method

    def in_transactions(name: str) -> Any:
        counter = counters[name]

        def listener(connection: Any, *_args: Any) -> None:
            if not autocommit(connection):
                next(counter)

        return listener

    patched: set[type] = set()
    pings = counters["pings"]

    def count_pings(connection: Any) -> None:
        # Pings go to the driver directly, past the statement events: wrap the dialect's.
        dialect = type(connection.dialect)
        if dialect in patched:
            return
        patched.add(dialect)
        original = dialect.do_ping

        def do_ping(self: Any, dbapi_connection: Any) -> Any:
            next(pings)
            return original(self, dbapi_connection)

        dialect.do_ping = do_ping  # type: ignore[method-assign]

    event.listen(Engine, "engine_connect", count_pings)
    event.listen(Engine, "before_cursor_execute", counting("statements"))
    event.listen(Engine, "begin", in_transactions("begins"))
    event.listen(Engine, "commit", in_transactions("commits"))
    event.listen(Engine, "rollback", in_transactions("rollbacks"))
    event.listen(Pool, "checkout", counting("checkouts"))
    resets = counters["resets"]

    def reset(_connection: Any, _record: Any, state: Any) -> None:
        # A connection its user already committed or rolled back is returned as it is.
        if not state.transaction_was_reset:
            next(resets)

    event.listen(Pool, "reset", reset)

    path = os.path.join(folder, f"{os.getpid()}.json")

    def write() -> None:
        # A count's repr is `count(N)`: N is how many times next() was called.
        now = {name: int(repr(counter)[6:-1]) for name, counter in counters.items()}
        if now == seen:
            return
        seen.update(now)
        with open(path + ".tmp", "w") as out:
            json.dump(now, out)
        os.replace(path + ".tmp", path)

    def loop() -> None:
        while True:
            threading.Event().wait(0.2)
            write()

    threading.Thread(target=loop, name="bench-probe", daemon=True).start()
    atexit.register(write)


if os.environ.get("CARTD_BENCH_PROBE"):
    _install(os.environ["CARTD_BENCH_PROBE"])
