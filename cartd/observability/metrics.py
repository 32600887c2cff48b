"""Prometheus metrics for one cartd process.

Everything hangs off a `Metrics` instance with its own `CollectorRegistry` rather than the
library's global REGISTRY, so that tests (and several apps in one process) never share counts
and nothing is registered at import time.

Three ways a scrape reaches the counters:

- one process per port (`cartd serve`): `/metrics` renders the process's own registry;
- several API processes on one port (`cartd serve --workers N`, gunicorn): Prometheus
  multiprocess mode. With `PROMETHEUS_MULTIPROC_DIR` set before prometheus-client is
  imported, every process writes its counters to a file of its own in that folder, and
  `/metrics` (whichever process answers) adds up every file; the volume gauges are read
  from the database once, by the process answering;
- a `cartd worker`: its own small HTTP server on `cartd.metrics_port`, serving its
  counters only (the database gauges stay with the API, so N workers do not query the
  database at each scrape).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from cartd.errors import ConfigError

log = logging.getLogger(__name__)

#: Archive error kinds the service reports; they are exported at 0 from the start so that
#: `rate()` and alerts see the series before the first error.
ARCHIVE_ERROR_KINDS = ("transient", "permanent", "checksum")
#: Kinds of pipeline step, exported at 0 from the start like the error kinds.
STEP_KINDS = ("file", "size", "finish")
#: What became of a try of a callback event, exported at 0 from the start as well.
CALLBACK_OUTCOMES = ("delivered", "retried", "abandoned")
#: prometheus-client's switch to multiprocess mode: a folder shared by the processes.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: The files prometheus-client writes in that folder (one per kind of metric and process).
_MULTIPROC_FILES = ("counter_*.db", "gauge_*.db", "histogram_*.db", "summary_*.db")


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
    """The service's counters plus, given a snapshot, the volume gauges.

    `registry` holds this process's counters; `exposed` is what a scrape of this process
    shows: the same, or in multiprocess mode (`multiprocess_dir`) the counters of every
    process writing to that folder, added up. The snapshot is collected by `exposed` only,
    so it is read once per scrape however many processes there are.
    """

    def __init__(
        self,
        snapshot: Callable[[], VolumeSnapshot] | None = None,
        *,
        multiprocess_dir: Path | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess_dir = multiprocess_dir
        reg = self.registry
        # The client library appends `_total` to counter names when it renders them.
        self._files_staged = Counter(
            "cartd_files_staged", "Files staged from the archive and verified.", registry=reg
        )
        self._bytes_pulled = Counter(
            "cartd_bytes_pulled", "Bytes of staged files pulled from the archive.", registry=reg
        )
        self._files_shared = Counter(
            "cartd_files_shared",
            "Files verified by linking a copy another cart holds, without an archive request.",
            registry=reg,
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
        self._steps = Counter(
            "cartd_steps",
            "Pipeline steps taken, by kind: one per file for file steps, one per cart for"
            " sizing and finishing; failed ones included.",
            ["kind"],
            registry=reg,
        )
        self._step_failures = Counter(
            "cartd_step_failures",
            "Steps that raised (most often: the database could not be reached) and were"
            " put to run again later, by kind.",
            ["kind"],
            registry=reg,
        )
        self._steps_resent = Counter(
            "cartd_steps_resent",
            "Steps a worker's sweep sent again since their message was lost, by kind.",
            ["kind"],
            registry=reg,
        )
        self._callbacks = Counter(
            "cartd_callbacks",
            "Tries of callback events by outcome: delivered (a 2xx answer), retried (to be"
            " tried again later) and abandoned (given up: the last try failed, or the"
            " receiver refused it).",
            ["outcome"],
            registry=reg,
        )
        for outcome in CALLBACK_OUTCOMES:
            self._callbacks.labels(outcome=outcome)
        for kind in STEP_KINDS:
            self._steps.labels(kind=kind)
            self._step_failures.labels(kind=kind)
            self._steps_resent.labels(kind=kind)
        if multiprocess_dir is None:
            self.exposed = reg
        else:
            self.exposed = CollectorRegistry()
            MultiProcessCollector(self.exposed, path=str(multiprocess_dir))  # type: ignore[no-untyped-call]
        if snapshot is not None:
            self.exposed.register(_VolumeCollector(snapshot))

    def file_staged(self, size: int) -> None:
        self._files_staged.inc()
        self._bytes_pulled.inc(size)

    def file_shared(self) -> None:
        self._files_shared.inc()

    def bytes_served(self, size: int) -> None:
        self._bytes_served.inc(size)

    def archive_error(self, kind: str) -> None:
        self._archive_errors.labels(kind=kind).inc()

    def evicted(self, carts: int, size: int) -> None:
        self._carts_evicted.inc(carts)
        self._bytes_evicted.inc(size)

    def steps_taken(self, kind: str, count: int = 1) -> None:
        self._steps.labels(kind=kind).inc(count)

    def step_failed(self, kind: str, count: int = 1) -> None:
        self._step_failures.labels(kind=kind).inc(count)

    def steps_resent(self, kind: str, count: int) -> None:
        if count:
            self._steps_resent.labels(kind=kind).inc(count)

    def callback(self, outcome: str) -> None:
        self._callbacks.labels(outcome=outcome).inc()

    def render(self) -> tuple[bytes, str]:
        """Body and content type for `/metrics`; calls the snapshot, so it may block on the DB.

        `generate_latest` writes the classic text format (0.0.4), which every Prometheus server
        reads; since prometheus-client 0.23 CONTENT_TYPE_LATEST names 1.0.0 instead, so the
        0.0.4 type is named explicitly to match the body.
        """
        return generate_latest(self.exposed), CONTENT_TYPE_PLAIN_0_0_4


def multiprocess_dir(environ: MutableMapping[str, str] | None = None) -> Path | None:
    """The folder of multiprocess mode, when `PROMETHEUS_MULTIPROC_DIR` names one.

    prometheus-client reads the variable when it is first imported and then writes every
    counter of the process to that folder; a folder that does not exist would fail the
    first counter with a bare OSError, so it is checked here with a clear message.
    """
    env = os.environ if environ is None else environ
    named = env.get(MULTIPROC_ENV, "").strip()
    if not named:
        return None
    folder = Path(named)
    if not folder.is_dir():
        raise ConfigError(f"{MULTIPROC_ENV}={named}: no such folder (it must exist, writable)")
    return folder


@contextmanager
def multiprocess_folder(environ: MutableMapping[str, str] | None = None) -> Iterator[Path]:
    """The folder the API processes of one `cartd serve --workers N` add their counters up
    in, set in `environ` for the processes it starts.

    The operator's `PROMETHEUS_MULTIPROC_DIR` when set: the files a previous run left
    there are removed first (prometheus-client would otherwise add a dead run's counters
    to this one's forever), so it must be this server's alone. Unset, a fresh folder is
    made in the temporary folder for this run and removed after it.
    """
    env = os.environ if environ is None else environ
    given = multiprocess_dir(env)
    if given is not None:
        for pattern in _MULTIPROC_FILES:
            for stale in given.glob(pattern):
                stale.unlink(missing_ok=True)
        yield given
        return
    made = Path(tempfile.mkdtemp(prefix="cartd-metrics-"))
    env[MULTIPROC_ENV] = str(made)
    try:
        yield made
    finally:
        env.pop(MULTIPROC_ENV, None)
        shutil.rmtree(made, ignore_errors=True)


class MetricsServer:
    """prometheus-client's own small HTTP server on a thread, serving one registry (at any
    path; it answers `/metrics` and honours the OpenMetrics `Accept` header)."""

    def __init__(self, registry: CollectorRegistry, address: str, port: int) -> None:
        try:
            server, thread = start_http_server(port, addr=address, registry=registry)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {address}:{port} (cartd.metrics_address,"
                f" cartd.metrics_port): {exc.strerror or exc}"
            ) from None
        self._server: WSGIServer = server
        self._thread: threading.Thread = thread
        self.address = address
        self.port = int(server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
