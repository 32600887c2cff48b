"""How a `cartd worker` comes to serve its metrics: the option over the setting, and
multiprocess mode kept away from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cartd import cli
from cartd.observability.metrics import MULTIPROC_ENV


@pytest.fixture(autouse=True)
def empty_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("CARTD_METRICS_PORT", raising=False)


def test_metrics_port_option_wins_over_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = cli.build_parser()
    monkeypatch.setenv("CARTD_METRICS_PORT", "9101")
    assert cli._worker_settings(parser.parse_args(["worker"])).metrics_port == 9101
    args = parser.parse_args(["worker", "--metrics-port", "9102"])
    assert cli._worker_settings(args).metrics_port == 9102
    off = parser.parse_args(["worker", "--metrics-port", "0"])
    assert cli._worker_settings(off).metrics_port == 0


@pytest.mark.parametrize("port", ["-1", "65536", "x"])
def test_metrics_port_option_must_be_a_port(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["worker", "--metrics-port", port])
    assert "expected a port from 0 to 65535" in capsys.readouterr().err


def test_the_cli_can_drop_multiprocess_mode_before_prometheus_client_is_imported() -> None:
    """prometheus-client chooses multiprocess mode when first imported; `cartd worker`
    drops the variable before that, so `cartd.cli` must not import it at its own import."""
    assert cli.MULTIPROC_ENV == MULTIPROC_ENV
    probe = "import sys, cartd.cli; print('prometheus_client' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"
