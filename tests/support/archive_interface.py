"""Run the real Pacifica Archive Interface (posix backend) for tests.

The archive lives in its own venv (see ``venvs.py``) and runs as a
subprocess in its own process group on a free loopback port.  Facts about
pacifica-archiveinterface 0.4.2 that shape this module (checked by hand):

* With CherryPy 18 every request fails unless the CherryPy config sets the
  ``MethodDispatcher``; the posix backend shares one open file across
  threads, so the server gets a single worker thread.
* The posix backend stores id ``123`` at ``<prefix>/123`` (``use_id2filename``
  is off by default), read-only (0444).  Running as root hides that: root may
  overwrite 0444 files, other users get a 500; ``put`` chmods first so a
  second put works either way.
* PUT ignores the ``Last-Modified`` header (it looks up a WSGI-style key in
  CherryPy's header dict), so the mtime is always "now"; ``put`` sets the
  wanted mtime with ``os.utime`` afterwards.
* PUT needs ``Content-Type: application/octet-stream``, or CherryPy tries to
  parse the body as a form and answers 400.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO
from urllib.parse import quote

import httpx

from tests.support.lifecycle import Running
from tests.support.venvs import REQUIREMENTS_DIR, ensure_venv

VENV_NAME = "archiveinterface"
CHERRYPY_CONFIG = """\
[global]
log.screen: False
server.thread_pool: 1

[/]
request.dispatch: cherrypy.dispatch.MethodDispatcher()
"""
START_ATTEMPTS = 3  # a freed port can be grabbed by someone else before we bind it


class ArchiveInterfaceError(RuntimeError):
    """The archive failed to start or to store a file; carries the details."""


def archive_interface_bin() -> Path:
    """Return the bin dir of the archive's venv, building it on first use."""
    return ensure_venv(VENV_NAME, REQUIREMENTS_DIR / "archiveinterface.txt")


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_up(url: str, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Poll ``GET url`` until it answers 200; False if ``proc`` exits first.

    Raises ``TimeoutError`` past the deadline.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return True
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer 200 within {timeout}s")


class ArchiveInterface(Running):
    """The real archive interface as a subprocess; a context manager.

    ``url`` ends with a slash (``url + file_id`` is a file), ``prefix`` is
    where the posix backend keeps the files.  Without a ``prefix`` a
    temporary one is made and removed on ``stop()``.
    """

    def __init__(
        self,
        prefix: Path | None = None,
        *,
        bin_dir: Path | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        """Configure, but do not start, an archive (see ``start``)."""
        self.url = ""
        self.port = 0
        self.prefix = prefix if prefix is not None else Path()
        self._wanted_prefix = prefix
        self._bin_dir = bin_dir
        self._startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._log: IO[bytes] | None = None

    @property
    def workdir(self) -> Path:
        """The private temp dir holding the CherryPy config and the log."""
        if self._workdir is None:
            raise RuntimeError("archive interface not started")
        return self._workdir

    def log(self) -> str:
        """Return what the server printed so far (stdout and stderr)."""
        if self._workdir is None:
            return ""
        path = self._workdir / "archiveinterface.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, prefix_dir: Path | None = None) -> ArchiveInterface:
        """Start the server storing under ``prefix_dir``; return once it answers."""
        if self._proc is not None:
            raise RuntimeError("archive interface already started")
        bin_dir = self._bin_dir or archive_interface_bin()
        self._workdir = Path(tempfile.mkdtemp(prefix="cartd-archive-"))
        wanted = prefix_dir if prefix_dir is not None else self._wanted_prefix
        self.prefix = (wanted if wanted is not None else self._workdir / "prefix").resolve()
        self.prefix.mkdir(parents=True, exist_ok=True)
        cp_config = self._workdir / "cherrypy.ini"
        cp_config.write_text(CHERRYPY_CONFIG)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        # Nonexistent on purpose: defaults only, never the user's ~/.pacifica-*.
        env["ARCHIVEINTERFACE_CONFIG"] = str(self._workdir / "absent" / "config.ini")
        env["ARCHIVEINTERFACE_CPCONFIG"] = str(cp_config)
        env["PYTHONUNBUFFERED"] = "1"
        try:
            for _ in range(START_ATTEMPTS):
                port = free_port()
                cmd = [
                    str(bin_dir / "pacifica-archiveinterface"),
                    "--cherrypy-config",
                    str(cp_config),
                    "-p",
                    str(port),
                    "-a",
                    "127.0.0.1",
                    "-t",
                    "posix",
                    "--prefix",
                    str(self.prefix),
                ]
                if self._launch(cmd, env, port):
                    return self
            raise ArchiveInterfaceError(
                f"archive interface did not start after {START_ATTEMPTS} attempts; "
                f"last log:\n{self.log()}"
            )
        except BaseException:
            self.stop()
            raise

    def _launch(self, cmd: list[str], env: dict[str, str], port: int) -> bool:
        """Run one server process; True once it answers, False if it died early."""
        if self._log is not None:
            self._log.close()
        self._log = open(self.workdir / "archiveinterface.log", "wb")  # noqa: SIM115
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.workdir,
            start_new_session=True,  # own process group, killed as a whole on stop
        )
        url = f"http://127.0.0.1:{port}/"
        try:
            up = wait_until_up(url, self._proc, self._startup_timeout)
        except TimeoutError as exc:
            raise ArchiveInterfaceError(f"{exc}; log:\n{self.log()}") from None
        if up:
            self.url, self.port = url, port
            return True
        self._kill()
        return False

    def _kill(self) -> None:
        """Stop the process group: SIGTERM, then SIGKILL if it lingers."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(grace)
                break
            except subprocess.TimeoutExpired:
                continue

    def stop(self) -> None:
        """Stop the server and remove its temp dir (and a temp prefix)."""
        self._kill()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        self.url, self.port = "", 0

    def path_of(self, file_id: str) -> Path:
        """Where the posix backend keeps ``file_id``."""
        if not file_id or "/" in file_id or file_id in (".", ".."):
            raise ValueError(f"bad file id: {file_id!r}")
        return self.prefix / file_id

    def put(self, file_id: str, data: bytes, mtime: float | None = None) -> Path:
        """Store ``data`` through the archive's own ``PUT``; return its path.

        ``mtime`` (unix seconds) is applied to the stored file afterwards,
        because the archive ignores ``Last-Modified`` on PUT.
        """
        if not self.url:
            raise RuntimeError("archive interface not started")
        path = self.path_of(file_id)
        if path.exists():
            path.chmod(0o644)  # the archive left it 0444; non-root PUT would 500
        resp = httpx.put(
            self.url + quote(file_id, safe=""),
            content=data,
            headers={"Content-Type": "application/octet-stream"},
            timeout=30.0,
        )
        if resp.status_code != 201:
            raise ArchiveInterfaceError(
                f"PUT {file_id} answered {resp.status_code}: {resp.text[:2000]}"
            )
        if not path.is_file() or path.stat().st_size != len(data):
            raise ArchiveInterfaceError(
                f"PUT {file_id} succeeded but {path} is missing or has the wrong size"
            )
        if mtime is not None:
            os.utime(path, (mtime, mtime))
        return path
