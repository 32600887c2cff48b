"""Run `cartd serve` and `cartd worker` as real processes on loopback, the way an operator would."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx

from tests.support.archive_interface import free_port
from tests.support.lifecycle import Running

#: Quick retries and polls so fault tests end in seconds, not minutes.
FAST_POLICY = {
    "CARTD_RETRY_INITIAL": "0.05",
    "CARTD_RETRY_MAX": "0.2",
    "CARTD_RETRY_ATTEMPTS": "5",
    "CARTD_POLL_INITIAL": "0.05",
    "CARTD_POLL_MAX": "0.5",
    "CARTD_ARCHIVE_TIMEOUT": "5",
}


class _Process(Running):
    """A cartd process of the tests: its log, a crash (SIGKILL) and a polite stop."""

    process: subprocess.Popen[bytes] | None
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


class CartdServer(_Process):
    def __init__(
        self,
        workdir: Path,
        env: Mapping[str, str],
        policy: Mapping[str, str] = FAST_POLICY,
        args: Sequence[str] = (),
        command: Sequence[str] | None = None,
    ) -> None:
        """`args` go after `cartd serve -p PORT`; `command` replaces that whole command
        line (`{port}` in it becomes the port), to run cartd under another server."""
        self.workdir = workdir
        self.args = list(args)
        self.command = list(command) if command is not None else None
        self.env = dict(env)
        self.policy = dict(policy)
        self.port = 0
        self.url = ""
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "cartd.log"

    def start(self, timeout: float = 30.0) -> CartdServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if self.command is not None:
            argv = [part.replace("{port}", str(self.port)) for part in self.command]
        else:
            argv = [sys.executable, "-m", "cartd", "serve", "-p", str(self.port), *self.args]
        self.process = _spawn(argv, self.workdir, self.log_path, self.policy, self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"cartd exited at start:\n{self.log()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + "/", timeout=1.0).status_code == 200:
                    return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"cartd did not answer within {timeout}s:\n{self.log()}")


def _spawn(
    argv: list[str],
    workdir: Path,
    log_path: Path,
    policy: Mapping[str, str],
    env: Mapping[str, str],
) -> subprocess.Popen[bytes]:
    """A command in its own session (so it can be killed whole), with only the settings
    given: none of this process's own leak in."""
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(
            ("CARTD_", "PEEWEE_", "VOLUME_", "ARCHIVE_INTERFACE", "BROKER_", "BACKEND_")
        )
    }
    environ.update({"HOME": str(workdir), **policy, **env})
    with log_path.open("ab") as log:
        return subprocess.Popen(
            argv,
            cwd=workdir,
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


class CartdWorker(_Process):
    """`cartd worker` (or `celery -A cartd.workers.celery_main worker`) as a real process;
    ready once Celery says it consumes."""

    def __init__(
        self,
        workdir: Path,
        env: Mapping[str, str],
        concurrency: int = 2,
        policy: Mapping[str, str] = FAST_POLICY,
        name: str = "worker",
        celery_cli: bool = False,
    ) -> None:
        self.workdir = workdir
        self.env = dict(env)
        self.policy = dict(policy)
        self.concurrency = concurrency
        self.celery_cli = celery_cli
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{name}.log"

    def start(self, timeout: float = 30.0) -> CartdWorker:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path.unlink(missing_ok=True)
        command = ["-m", "cartd", "worker"]
        if self.celery_cli:  # the original's style: `celery -A <app module> worker`
            command = ["-m", "celery", "-A", "cartd.workers.celery_main", "worker", "-l", "INFO"]
        self.process = _spawn(
            [sys.executable, *command, "--concurrency", str(self.concurrency)],
            self.workdir,
            self.log_path,
            self.policy,
            self.env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"cartd worker exited at start:\n{self.log()}")
            if " ready." in self.log():
                return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"cartd worker was not ready within {timeout}s:\n{self.log()}")

    def tasks_run(self, name: str) -> int:
        """How many tasks of this name the worker has finished (from its log)."""
        return sum(
            1 for line in self.log().splitlines() if f"Task {name}[" in line and "succeeded" in line
        )


def wait_until(
    condition: Callable[[], bool], timeout: float = 30.0, interval: float = 0.05
) -> None:
    """Poll `condition` until true; fail with a clear message past the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def wait_for_cart(client: httpx.Client, uid: str, timeout: float = 30.0) -> httpx.Response:
    """HEAD the cart until it is no longer staging; return that last answer."""
    last: list[httpx.Response] = []

    def settled() -> bool:
        response = client.head(f"/{uid}")
        last[:] = [response]
        return bool(response.headers.get("X-Pacifica-Status") != "staging")

    try:
        wait_until(settled, timeout)
    except AssertionError:
        raise AssertionError(
            f"cart {uid} still staging after {timeout}s: {dict(last[0].headers)}"
        ) from None
    return last[0]
