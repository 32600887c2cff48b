"""Metrics render what the service counted and what the database says, one registry each."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cartd.observability.metrics import Metrics, VolumeSnapshot

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
    metrics.bytes_served(7)
    metrics.bytes_served(1)
    metrics.evicted(2, 300)
    found = samples(metrics)
    assert value(found, "cartd_files_staged_total") == 2
    assert value(found, "cartd_bytes_pulled_total") == 15
    assert value(found, "cartd_bytes_served_total") == 8
    assert value(found, "cartd_carts_evicted_total") == 2
    assert value(found, "cartd_bytes_evicted_total") == 300


def test_fresh_counters_render_zero() -> None:
    found = samples(Metrics(fixed()))
    for name in (
        "cartd_files_staged_total",
        "cartd_bytes_pulled_total",
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
    }
    assert expected.items() <= types.items()
