"""Counts a cartd process's database calls for the benchmark; cartd itself never loads it.

`bench/distributed.py` starts cartd processes with this folder on `PYTHONPATH` and
`CARTD_BENCH_PROBE` naming a folder: Python imports this module at start-up, which
listens to SQLAlchemy's events on every engine and pool and writes the counts to
`<CARTD_BENCH_PROBE>/<pid>.json` (at most five times a second, and at exit). The
benchmark reads them to estimate the database round-trips of each process.
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
        for name in ("statements", "begins", "commits", "rollbacks", "checkouts", "resets")
    }
    seen = dict.fromkeys(counters, 0)

    def counting(name: str) -> Any:
        counter = counters[name]

        def listener(*_args: Any, **_kwargs: Any) -> None:
            next(counter)

        return listener

    event.listen(Engine, "before_cursor_execute", counting("statements"))
    event.listen(Engine, "begin", counting("begins"))
    event.listen(Engine, "commit", counting("commits"))
    event.listen(Engine, "rollback", counting("rollbacks"))
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
