"""The benchmarks at tiny sizes, so that they cannot rot: they run, verify, and report."""

from __future__ import annotations

import json
import shutil
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
    assert [r["scenario"] for r in results] == [
        "3x64KiB",
        "3 carts x 2x1KiB",
        "tape 1s 2x1KiB",
        "file:// 1 cart x 300x1KiB",
    ]
    for row in results:
        assert row["stuck"] == 0
        assert row["wrong"] == 0
        assert row["ready_max"] > 0
        assert row["peak_rss_mib"] > 0
        assert row["download_mb_s"] > 0, "every ready cart was downloaded and checked"
        assert row["e2e_max"] > row["ready_max"] - 1e-9, "end to end includes the download"
    assert results[0]["raw_seconds"] > 0
    assert results[2]["archive_requests_per_file"] >= 2
    for row in (results[0], results[1], results[3]):
        assert row["raw_e2e_seconds"] > 0
        assert row["ratio_e2e_to_raw"] > 0
    assert results[3]["first_pull_median"] > 0
    serving = document["serving"]
    assert [row["size"] for row in serving] == [64 * 1024, 1024 * 1024]
    for row in serving:
        assert row["wrong"] == 0
        assert row["ready_seconds"] > 0
        assert row["peak_rss_mib"] > 0
        if shutil.which("curl"):
            assert row["first_mb_s"] > 0
            assert row["cached_mb_s"] > 0
    assert "curl cached MB/s" in result.stdout


DISTRIBUTED = BENCH.with_name("distributed.py")


@pytest.mark.archive
@pytest.mark.rabbitmq
@pytest.mark.postgres
def test_distributed_benchmark_smoke_run(tmp_path: Path) -> None:
    out = tmp_path / "distributed.json"
    scenarios = ["3 carts x 2x1KiB", "file:// 1 cart x 300x1KiB"]
    only = [arg for name in scenarios for arg in ("--only", name)]
    result = subprocess.run(
        [
            sys.executable,
            str(DISTRIBUTED),
            "--smoke",
            "--workers",
            "0,2",
            *only,
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "db rt/file" in result.stdout
    rows = json.loads(out.read_text())["results"]
    assert [(r["scenario"], r["mode"]) for r in rows] == [
        (name, mode) for name in scenarios for mode in ("embedded", "2 wrk")
    ]
    for row in rows:
        assert row["stuck"] == 0
        assert row["wrong"] == 0
        assert 0 < row["first_pull_median"] <= row["ready_max"]
        assert row["download_mb_s"] > 0, "every ready cart was downloaded and checked"
        assert row["db_round_trips_per_file"]["api"] > 0, "the probe counted the API's calls"
    for row in rows[1::2]:  # two workers: they did the work, over the broker and PostgreSQL
        assert row["ratio_to_embedded"] > 0
        assert row["cpu_ms_per_file"]["worker"] > 0
        assert row["db_round_trips_per_file"]["worker"] > 0
        assert row["db_transactions_per_file"] > 0
        assert row["broker_messages_per_file"] > 0
        assert row["messages_left_in_queue"] == 0
        assert row["peak_rss_mib_of"]["worker"] > 0
