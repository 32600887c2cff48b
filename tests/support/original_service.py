"""The real Pacifica Cartd 0.7.0 serving: its CherryPy server and its Celery worker as
processes of its own venv, on SQLite, a loopback port and the machine's RabbitMQ (its
venv has no Redis client), in front of a given archive. Clients that must also work
against the original are tested on it.

Both processes run `original_server.py` with the venv's python: the original's own start
code, with its tasks sent through a queue of this server's own (deleted on stop).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import httpx

from tests.support.archive_interface import free_port
from tests.support.brokers import BROKERS, BrokerQueue
from tests.support.lifecycle import Running
from tests.support.original import original_python

SCRIPT = Path(__file__).with_name("original_server.py")
#: As the original's own docs give it: CherryPy 18 routes by method only with this.
CHERRYPY_CONFIG = """\
[global]
log.screen: True
engine.autoreload.on: False

[/]
request.dispatch: cherrypy.dispatch.MethodDispatcher()
"""


class OriginalCartd(Running):
    """`url` (no trailing slash) once started; `log()` has both processes' output."""

    def __init__(self, workdir: Path, archive_url: str) -> None:
        self.workdir = workdir
        self.archive_url = archive_url
        self.queue = BrokerQueue(BROKERS["rabbitmq"], f"cartd-original-{uuid.uuid4().hex[:10]}")
        self.url = ""
        self._processes: list[subprocess.Popen[bytes]] = []

    def _env(self) -> dict[str, str]:
        return {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.workdir),
            "CARTD_CONFIG": str(self.workdir / "absent" / "config.ini"),  # its defaults
            "VOLUME_PATH": str(self.workdir / "volume") + "/",
            "PEEWEE_URL": f"sqliteext:///{self.workdir / 'original.sqlite3'}",
            "ARCHIVE_INTERFACE_URL": self.archive_url,
            "BROKER_URL": self.queue.url,
            "BACKEND_URL": "rpc://",
            "ORIGINAL_QUEUE": self.queue.name,
            "PYTHONUNBUFFERED": "1",
        }

    def _spawn(self, *args: str, log: str) -> subprocess.Popen[bytes]:
        with (self.workdir / log).open("ab") as output:
            process = subprocess.Popen(
                [str(original_python()), str(SCRIPT), *args],
                cwd=self.workdir,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._processes.append(process)
        return process

    def log(self) -> str:
        return "\n".join(
            path.read_text(errors="replace")
            for path in (self.workdir / "worker.log", self.workdir / "server.log")
            if path.exists()
        )

    def start(self, timeout: float = 60.0) -> OriginalCartd:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "volume").mkdir(exist_ok=True)
        cpconfig = self.workdir / "cpconfig.ini"
        cpconfig.write_text(CHERRYPY_CONFIG)
        try:
            worker = self._spawn("worker", log="worker.log")
            port = free_port()
            server = self._spawn("serve", str(port), str(cpconfig), log="server.log")
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + timeout
            while not self.url:
                if worker.poll() is not None or server.poll() is not None:
                    raise RuntimeError(f"the original exited at start:\n{self.log()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the original did not start in {timeout}s:\n{self.log()}")
                with contextlib.suppress(httpx.TransportError):
                    worker_log = (self.workdir / "worker.log").read_text(errors="replace")
                    if " ready." in worker_log and httpx.get(url, timeout=1).status_code == 200:
                        self.url = url
                        break
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Kill both (nothing of theirs is kept; Celery's warm shutdown takes seconds)."""
        for process in self._processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
        for process in self._processes:
            process.wait(10)
        self._processes.clear()
        self.queue.delete()
