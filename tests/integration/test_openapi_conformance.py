"""The OpenAPI description is exactly as strict as cartd (API.md section 3).

schemathesis reads `/openapi.json` from a real cartd (a `file://` archive folder behind
it) and sends requests the description allows and requests it forbids, with boundary
values of every length and pattern. Its checks fail the test on an undocumented status
code, header or content type, a body not matching its schema, a forbidden request that
is accepted, or an allowed request that is refused; our own check fails it on any 500
other than the documented one of a cart in error.

Rules JSON Schema cannot state are in the description's words only: byte lengths of
UTF-8, ids that leave the archive's folder once percent-decoded, two files at one path
or a file where another needs a folder. An order the description allows that breaks one
of those is not counted as "allowed": it must instead get a 400 (checked below).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ServerFactory
from tests.support.archive_interface import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_cartd_is_exactly_as_strict_as_its_openapi_description(
    cartd_factory: ServerFactory, tmp_path: Path
) -> None:
    folder = tmp_path / "archive"
    folder.mkdir()
    (folder / "a.txt").write_bytes(b"hello\n")
    # Callbacks enabled, so the order's `callback` is held to its pattern both ways. Only
    # to a loopback port nothing listens on: the events of orders that end go nowhere.
    nobody = free_port()
    server = cartd_factory(
        f"file://{folder}",
        CARTD_MAX_ORDER_SIZE="65536",
        CARTD_CALLBACK_HOSTS=f"127.0.0.1:{nobody},[::1]:{nobody}",
        CARTD_CALLBACK_SECRET="the conformance test's secret",
        CARTD_MAX_WAIT="1",  # a HEAD that prefers to wait is held at most 1 s, not 50
    )
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.support.openapi_checks",
        "PYTHONPATH": str(ROOT),
        "HOME": str(tmp_path),  # no user configuration, no report folder of ours
    }
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json",
        "--mode", "all",
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", "100",  # per operation and phase: about 10 s in all
        "--generation-deterministic",  # derived, not random: every run sends the same
        "--workers", "1",
        "--checks", "all",
        "--exclude-checks", "not_a_server_error,positive_data_acceptance",
        "--no-color",
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    report = result.stdout[-20000:] + result.stderr[-5000:]
    assert result.returncode == 0, report
    assert "Tested: 8" in report, report  # every operation of the description
