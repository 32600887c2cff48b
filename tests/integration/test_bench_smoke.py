"""The benchmark at tiny sizes, so that it cannot rot: it runs, verifies, and reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "run.py"


@pytest.mark.archive
def test_benchmark_smoke_run(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "ready med" in result.stdout
    document = json.loads(out.read_text())
    results = document["results"]
    assert [r["scenario"] for r in results] == ["3x64KiB", "3 carts x 2x1KiB", "tape 1s 2x1KiB"]
    for row in results:
        assert row["stuck"] == 0
        assert row["wrong"] == 0
        assert row["ready_max"] > 0
        assert row["peak_rss_mib"] > 0
        assert row["download_mb_s"] > 0, "every ready cart was downloaded and checked"
    assert results[0]["raw_seconds"] > 0
    assert results[2]["archive_requests_per_file"] >= 2
