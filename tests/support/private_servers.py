"""A Redis and a PostgreSQL server of one test's own, on free loopback ports, that the test
may stop and start again without touching the machine's shared servers."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from tests.support.archive_interface import free_port
from tests.support.lifecycle import Running


def _wait(ready: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up within {timeout}s")


class PrivateRedis(Running):
    """`redis-server` without persistence: a restart loses every message, as a broker
    that crashed with its queue in memory."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> PrivateRedis:
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        argv += ["--dir", str(self.workdir)]
        with (self.workdir / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        _wait(self._pings, "redis-server", timeout)
        return self

    def _pings(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited: {(self.workdir / 'redis.log').read_text()}")
        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.ConnectionError:
            return False

    def kill(self) -> None:
        """SIGKILL: gone with every message it held."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        self.kill()


def _postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else name


class PrivatePostgres(Running):
    """A PostgreSQL cluster made by `initdb` in a folder of its own, run with `pg_ctl`.

    PostgreSQL refuses to run as root: as root, the folder is given to the `postgres`
    user and the commands run as that user.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"
        self.data: Path | None = None

    def _run(self, *argv: str, timeout: float = 60.0) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run(
            [*prefix, *argv], capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stdout}{done.stderr}")

    def start(self, timeout: float = 30.0) -> PrivatePostgres:
        if self.data is None:
            self.data = Path(tempfile.mkdtemp(prefix="cartd-test-pg-"))
            if os.geteuid() == 0:
                owner = pwd.getpwnam("postgres")
                os.chown(self.data, owner.pw_uid, owner.pw_gid)
            initdb = [_postgres_bin("initdb"), "-D", str(self.data / "db"), "-U", "postgres"]
            self._run(*initdb, "-A", "trust", "--no-sync", "-E", "UTF8")
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        ctl = [_postgres_bin("pg_ctl"), "-D", str(self.data / "db"), "-l", str(self.data / "log")]
        self._run(*ctl, "-o", options, "-w", "-t", str(int(timeout)), "start")
        _wait(self._answers, "PostgreSQL", timeout)
        return self

    def _answers(self) -> bool:
        engine = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres")
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return True
        except OperationalError:
            return False
        finally:
            engine.dispose()

    def halt(self) -> None:
        """Stop at once, as a crash would (`pg_ctl stop -m immediate`): the next start
        recovers from the write-ahead log."""
        assert self.data is not None
        self._run(_postgres_bin("pg_ctl"), "-D", str(self.data / "db"), "-m", "immediate", "stop")

    def stop(self) -> None:
        if self.data is None:
            return
        pid_file = self.data / "db" / "postmaster.pid"
        if pid_file.exists():
            self.halt()
        shutil.rmtree(self.data, ignore_errors=True)
        self.data = None
