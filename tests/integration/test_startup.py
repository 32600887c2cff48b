"""Start-up against a database that is not there: every command waits as
`database.connect_attempts` and `database.connect_wait` say, then stops with a clear message
and exit code 2, never a traceback."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import run_cartd
from tests.support.archive_interface import free_port

URLS = {
    "postgres": "postgres://postgres@127.0.0.1:{port}/cartd",
    "mysql": "mysql://root@127.0.0.1:{port}/cartd",
}


@pytest.mark.parametrize("kind", sorted(URLS))
@pytest.mark.parametrize(
    "command",
    [
        ("serve", "-p", "0"),
        ("serve", "--workers", "2", "-p", "0"),
        ("dbsync",),
        ("dbchk",),
        ("stuck",),
        ("fixit", "--cartid", "x"),
    ],
)
def test_an_unreachable_database_is_tried_as_configured_then_named(
    kind: str, command: tuple[str, ...], tmp_path: Path
) -> None:
    port = free_port()  # nothing listens there
    env = {
        "HOME": str(tmp_path),
        "VOLUME_PATH": str(tmp_path / "volume"),
        "PEEWEE_URL": URLS[kind].format(port=port),
        "DATABASE_CONNECT_ATTEMPTS": "2",
        "DATABASE_CONNECT_WAIT": "0.2",
    }
    started = time.monotonic()
    result = run_cartd(*command, env=env)
    took = time.monotonic() - started

    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "cannot reach the database after 2 attempts" in result.stderr
    assert "127.0.0.1" in result.stderr  # the driver's own words name the server
    assert "attempt 1 of 2" in result.stderr  # it did wait and try again
    assert 0.2 <= took < 20, f"gave up after {took:.1f}s"
