"""Metrics render what the service counted and what the database says, one registry each."""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import httpx
import pytest
from prometheus_client import REGISTRY, generate_latest, values
from prometheus_client.parser import text_string_to_metric_families

from cartd.errors import ConfigError
from cartd.observability.metrics import (
    MULTIPROC_ENV,
    Metrics,
    MetricsServer,
    VolumeSnapshot,
    multiprocess_dir,
    multiprocess_folder,
)
from cartd.service.pipeline import Advanced, Pipeline
from cartd.workers.steps import RETRY_BROKEN, take_step

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

SNAPSHOT = VolumeSnapshot(
    carts_by_status={"waiting": 0, "staging": 2, "ready": 5, "error": 1},
    used_bytes=123_456_789,
    reserved_bytes=1_000,
)


def fixed(snapshot: VolumeSnapshot = SNAPSHOT) -> Callable[[], VolumeSnapshot]:
    return lambda: snapshot


def samples(metrics: Metrics) -> Samples:
    body, _ = metrics.render()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def test_counters_render_their_values() -> None:
    metrics = Metrics(fixed())
    metrics.file_staged(10)
    metrics.file_staged(5)
    metrics.file_shared()
    metrics.bytes_served(7)
    metrics.bytes_served(1)
    metrics.evicted(2, 300)
    found = samples(metrics)
    assert value(found, "cartd_files_staged_total") == 2
    assert value(found, "cartd_bytes_pulled_total") == 15
    assert value(found, "cartd_files_shared_total") == 1, "linked, not pulled"
    assert value(found, "cartd_bytes_served_total") == 8
    assert value(found, "cartd_carts_evicted_total") == 2
    assert value(found, "cartd_bytes_evicted_total") == 300


def test_fresh_counters_render_zero() -> None:
    found = samples(Metrics(fixed()))
    for name in (
        "cartd_files_staged_total",
        "cartd_bytes_pulled_total",
        "cartd_files_shared_total",
        "cartd_bytes_served_total",
        "cartd_carts_evicted_total",
        "cartd_bytes_evicted_total",
    ):
        assert value(found, name) == 0


def test_archive_errors_are_labelled_by_kind() -> None:
    metrics = Metrics(fixed())
    metrics.archive_error("transient")
    metrics.archive_error("transient")
    metrics.archive_error("checksum")
    found = samples(metrics)
    assert value(found, "cartd_archive_errors_total", kind="transient") == 2
    assert value(found, "cartd_archive_errors_total", kind="checksum") == 1
    # Known kinds are exported before their first error, so alerts see a series at 0.
    assert value(found, "cartd_archive_errors_total", kind="permanent") == 0
    assert not any(name == "cartd_archive_errors_total" and not lb for name, lb in found)


def test_snapshot_gauges_carry_status_labels_and_values() -> None:
    found = samples(Metrics(fixed()))
    for status, count in SNAPSHOT.carts_by_status.items():
        assert value(found, "cartd_carts", status=status) == count
    carts = {lb for name, lb in found if name == "cartd_carts"}
    assert carts == {frozenset({("status", s)}) for s in SNAPSHOT.carts_by_status}
    assert value(found, "cartd_volume_used_bytes") == 123_456_789
    assert value(found, "cartd_volume_reserved_bytes") == 1_000


def test_snapshot_is_taken_at_each_scrape_and_not_before() -> None:
    calls: list[int] = []

    def snapshot() -> VolumeSnapshot:
        calls.append(1)
        return VolumeSnapshot({"ready": len(calls)}, used_bytes=len(calls), reserved_bytes=0)

    metrics = Metrics(snapshot)
    assert calls == []
    assert value(samples(metrics), "cartd_carts", status="ready") == 1
    found = samples(metrics)
    assert value(found, "cartd_carts", status="ready") == 2
    assert value(found, "cartd_volume_used_bytes") == 2


def test_two_instances_do_not_share_counts() -> None:
    first, second = Metrics(fixed()), Metrics(fixed())
    first.file_staged(100)
    first.archive_error("permanent")
    second.bytes_served(3)
    one, two = samples(first), samples(second)
    assert value(one, "cartd_files_staged_total") == 1
    assert value(two, "cartd_files_staged_total") == 0
    assert value(one, "cartd_archive_errors_total", kind="permanent") == 1
    assert value(two, "cartd_archive_errors_total", kind="permanent") == 0
    assert value(one, "cartd_bytes_served_total") == 0
    assert value(two, "cartd_bytes_served_total") == 3


def test_nothing_lands_on_the_default_registry() -> None:
    Metrics(fixed()).file_staged(1)
    assert b"cartd_" not in generate_latest(REGISTRY)


def test_failing_snapshot_still_renders_counters(caplog: pytest.LogCaptureFixture) -> None:
    healthy = True

    def snapshot() -> VolumeSnapshot:
        if not healthy:
            raise RuntimeError("database is down")
        return SNAPSHOT

    metrics = Metrics(snapshot)
    metrics.file_staged(42)
    healthy = False
    with caplog.at_level(logging.ERROR, logger="cartd.observability.metrics"):
        found = samples(metrics)
    assert value(found, "cartd_files_staged_total") == 1
    assert value(found, "cartd_bytes_pulled_total") == 42
    gauges = {"cartd_carts", "cartd_volume_used_bytes", "cartd_volume_reserved_bytes"}
    assert not gauges.intersection(name for name, _ in found)
    assert any(r.levelno == logging.ERROR and r.exc_info for r in caplog.records)
    assert "database is down" in caplog.text
    healthy = True
    assert value(samples(metrics), "cartd_volume_used_bytes") == SNAPSHOT.used_bytes


def test_render_is_the_classic_text_format() -> None:
    body, content_type = Metrics(fixed()).render()
    assert content_type.startswith("text/plain; version=0.0.4")
    assert isinstance(body, bytes)
    assert body.endswith(b"\n")


def test_names_follow_prometheus_rules() -> None:
    body, _ = Metrics(fixed()).render()
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", body.decode(), flags=re.MULTILINE))
    assert types
    for name, kind in types.items():
        assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", name), name
        assert name.startswith("cartd_"), name
        if kind == "counter":
            assert name.endswith("_total"), name
    expected = {
        "cartd_files_staged_total": "counter",
        "cartd_bytes_pulled_total": "counter",
        "cartd_bytes_served_total": "counter",
        "cartd_archive_errors_total": "counter",
        "cartd_carts_evicted_total": "counter",
        "cartd_bytes_evicted_total": "counter",
        "cartd_carts": "gauge",
        "cartd_volume_used_bytes": "gauge",
        "cartd_volume_reserved_bytes": "gauge",
        "cartd_steps_total": "counter",
        "cartd_step_failures_total": "counter",
        "cartd_steps_resent_total": "counter",
        "cartd_callbacks_total": "counter",
    }
    assert expected.items() <= types.items()


# -- what a worker shows, and how steps are counted ---------------------------------------


def test_without_a_snapshot_only_the_counters_are_shown() -> None:
    found = samples(Metrics())
    assert value(found, "cartd_files_staged_total") == 0
    assert not {"cartd_carts", "cartd_volume_used_bytes", "cartd_volume_reserved_bytes"} & {
        name for name, _ in found
    }


def test_steps_failures_and_resent_steps_are_counted_by_kind() -> None:
    metrics = Metrics()
    metrics.steps_taken("file", 16)
    metrics.steps_taken("size")
    metrics.step_failed("file", 3)
    metrics.steps_resent("finish", 2)
    metrics.steps_resent("size", 0)
    found = samples(metrics)
    assert value(found, "cartd_steps_total", kind="file") == 16
    assert value(found, "cartd_steps_total", kind="size") == 1
    assert value(found, "cartd_steps_total", kind="finish") == 0
    assert value(found, "cartd_step_failures_total", kind="file") == 3
    assert value(found, "cartd_step_failures_total", kind="size") == 0
    assert value(found, "cartd_steps_resent_total", kind="finish") == 2
    assert value(found, "cartd_steps_resent_total", kind="file") == 0


class _Broken:
    """A pipeline whose steps raise, as with the database away."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def advance(self, file_ids: Sequence[int]) -> None:
        raise RuntimeError("database is down")

    def size_cart(self, cart_id: int) -> Advanced:
        return Advanced([None], [7, 8])


def test_take_step_counts_every_step_and_those_that_raised() -> None:
    metrics = Metrics()
    pipeline = cast(Pipeline, _Broken(metrics))
    assert take_step(pipeline, "size", [1]).start == [7, 8]
    assert take_step(pipeline, "file", [1, 2, 3]).delays == [RETRY_BROKEN] * 3
    found = samples(metrics)
    assert value(found, "cartd_steps_total", kind="size") == 1
    assert value(found, "cartd_steps_total", kind="file") == 3
    assert value(found, "cartd_step_failures_total", kind="file") == 3
    assert value(found, "cartd_step_failures_total", kind="size") == 0


# -- multiprocess mode: the API processes of one port --------------------------------------


def _process(monkeypatch: pytest.MonkeyPatch, pid: int) -> None:
    """Make the next counters as the process `pid` of multiprocess mode would."""
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(lambda: pid))


def test_multiprocess_mode_adds_up_every_process_and_reads_the_database_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    calls: list[int] = []

    def snapshot() -> VolumeSnapshot:
        calls.append(1)
        return SNAPSHOT

    _process(monkeypatch, 101)
    first = Metrics(snapshot, multiprocess_dir=tmp_path)
    _process(monkeypatch, 102)
    second = Metrics(snapshot, multiprocess_dir=tmp_path)
    first.bytes_served(1000)
    second.bytes_served(234)
    first.file_staged(10)
    second.archive_error("transient")
    second.steps_taken("file", 4)

    for metrics in (first, second):  # whichever process answers the scrape
        calls.clear()
        found = samples(metrics)
        assert calls == [1], "the database is read once per scrape, not once per process"
        assert value(found, "cartd_bytes_served_total") == 1234
        assert value(found, "cartd_files_staged_total") == 1
        assert value(found, "cartd_bytes_pulled_total") == 10
        assert value(found, "cartd_archive_errors_total", kind="transient") == 1
        assert value(found, "cartd_archive_errors_total", kind="permanent") == 0
        assert value(found, "cartd_steps_total", kind="file") == 4
        assert value(found, "cartd_carts", status="ready") == SNAPSHOT.carts_by_status["ready"]
        assert value(found, "cartd_volume_used_bytes") == SNAPSHOT.used_bytes
    assert sorted(path.name for path in tmp_path.iterdir()) == ["counter_101.db", "counter_102.db"]


def test_the_multiprocess_folder_must_exist(tmp_path: Path) -> None:
    assert multiprocess_dir({}) is None
    assert multiprocess_dir({MULTIPROC_ENV: " "}) is None
    assert multiprocess_dir({MULTIPROC_ENV: str(tmp_path)}) == tmp_path
    with pytest.raises(ConfigError, match=f"{MULTIPROC_ENV}=.*gone: no such folder"):
        multiprocess_dir({MULTIPROC_ENV: str(tmp_path / "gone")})


def test_serve_makes_a_folder_for_its_run_when_none_is_given() -> None:
    environ: dict[str, str] = {}
    with multiprocess_folder(environ) as folder:
        assert folder.is_dir()
        assert environ == {MULTIPROC_ENV: str(folder)}, "for the processes it starts"
        (folder / "counter_1.db").write_bytes(b"")
    assert not folder.exists(), "removed after the run"
    assert environ == {}


def test_serve_empties_the_given_folder_of_a_previous_runs_counters(tmp_path: Path) -> None:
    for name in ("counter_1.db", "gauge_livesum_1.db", "histogram_2.db", "notes.txt"):
        (tmp_path / name).write_text("old")
    environ = {MULTIPROC_ENV: str(tmp_path)}
    with multiprocess_folder(environ) as folder:
        assert folder == tmp_path
        assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]
    assert tmp_path.is_dir(), "the operator's folder is kept"
    assert environ == {MULTIPROC_ENV: str(tmp_path)}


# -- a worker's endpoint -------------------------------------------------------------------


def test_a_metrics_server_serves_the_registry_over_http_until_closed() -> None:
    metrics = Metrics()
    server = MetricsServer(metrics.exposed, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.port}/metrics"
    try:
        metrics.file_staged(5)
        first = httpx.get(url, timeout=5)
        metrics.file_staged(6)
        second = httpx.get(url, timeout=5)
    finally:
        server.close()
    assert first.status_code == 200
    assert "cartd_files_staged_total 1.0" in first.text
    assert "cartd_bytes_pulled_total 11.0" in second.text, "each scrape reads the counters"
    with pytest.raises(httpx.TransportError):
        httpx.get(url, timeout=5)


def test_a_metrics_port_already_taken_stops_with_a_clear_message() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"cannot serve metrics on 127.0.0.1:{port}"):
            MetricsServer(Metrics().exposed, "127.0.0.1", port)
