"""Prometheus metrics for one cartd process.

Everything hangs off a `Metrics` instance with its own `CollectorRegistry` rather than the
library's global REGISTRY, so that tests (and several apps in one process) never share counts
and nothing is registered at import time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

#: Archive error kinds the service reports; they are exported at 0 from the start so that
#: `rate()` and alerts see the series before the first error.
ARCHIVE_ERROR_KINDS = ("transient", "permanent", "checksum")


@dataclass(frozen=True)
class VolumeSnapshot:
    """What the database says about the cache volume at scrape time."""

    carts_by_status: dict[str, int]
    used_bytes: int
    reserved_bytes: int


def _volume_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
    return (
        GaugeMetricFamily("cartd_carts", "Carts in the database by status.", labels=["status"]),
        GaugeMetricFamily(
            "cartd_volume_used_bytes", "Bytes of verified files and bundles on the volume."
        ),
        GaugeMetricFamily(
            "cartd_volume_reserved_bytes", "Bytes reserved on the volume by live carts."
        ),
    )


class _VolumeCollector(Collector):
    """Reads the volume gauges at scrape time, since only the database knows them.

    A failing snapshot drops these gauges from that scrape instead of failing it, so the
    counters stay visible while the database is down.
    """

    def __init__(self, snapshot: Callable[[], VolumeSnapshot]) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterable[Metric]:
        # Lets the registry check the names at registration without querying the database.
        return _volume_families()

    def collect(self) -> Iterable[Metric]:
        try:
            snap = self._snapshot()
        except Exception:
            log.exception("volume snapshot failed; scraping without the cartd_carts/volume gauges")
            return []
        carts, used, reserved = _volume_families()
        for status, count in sorted(snap.carts_by_status.items()):
            carts.add_metric([status], count)
        used.add_metric([], snap.used_bytes)
        reserved.add_metric([], snap.reserved_bytes)
        return [carts, used, reserved]


class Metrics:
    """The service's counters plus the volume gauges, rendered in the Prometheus text format."""

    def __init__(self, snapshot: Callable[[], VolumeSnapshot]) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        # The client library appends `_total` to counter names when it renders them.
        self._files_staged = Counter(
            "cartd_files_staged", "Files staged from the archive and verified.", registry=reg
        )
        self._bytes_pulled = Counter(
            "cartd_bytes_pulled", "Bytes of staged files pulled from the archive.", registry=reg
        )
        self._bytes_served = Counter(
            "cartd_bytes_served", "Bytes of cart bundles sent to clients.", registry=reg
        )
        self._archive_errors = Counter(
            "cartd_archive_errors", "Failed archive requests by kind.", ["kind"], registry=reg
        )
        for kind in ARCHIVE_ERROR_KINDS:
            self._archive_errors.labels(kind=kind)
        self._carts_evicted = Counter(
            "cartd_carts_evicted", "Carts evicted to free volume space.", registry=reg
        )
        self._bytes_evicted = Counter(
            "cartd_bytes_evicted", "Bytes freed on the volume by evictions.", registry=reg
        )
        reg.register(_VolumeCollector(snapshot))

    def file_staged(self, size: int) -> None:
        self._files_staged.inc()
        self._bytes_pulled.inc(size)

    def bytes_served(self, size: int) -> None:
        self._bytes_served.inc(size)

    def archive_error(self, kind: str) -> None:
        self._archive_errors.labels(kind=kind).inc()

    def evicted(self, carts: int, size: int) -> None:
        self._carts_evicted.inc(carts)
        self._bytes_evicted.inc(size)

    def render(self) -> tuple[bytes, str]:
        """Body and content type for `/metrics`; calls the snapshot, so it may block on the DB.

        `generate_latest` writes the classic text format (0.0.4), which every Prometheus server
        reads; since prometheus-client 0.23 CONTENT_TYPE_LATEST names 1.0.0 instead, so the
        0.0.4 type is named explicitly to match the body.
        """
        return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4
