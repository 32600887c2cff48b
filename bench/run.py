"""Benchmark cartd against the raw archive, in one run, on this machine.

    python bench/run.py                 # every scenario, full size (a few minutes)
    python bench/run.py --smoke         # tiny sizes: checks the benchmark itself works
    python bench/run.py --only 1000x4KiB --json out.json

It starts the real Pacifica Archive Interface (posix backend, one request
thread) and cartd in its embedded default with its default settings, writes
deterministic files into the archive, and for each scenario measures:

- the raw baseline: a plain client doing, file after file, what a cart needs
  of the archive (stage, HEAD, GET with the checksum checked), with the HTTP
  library cartd uses (the standard `http.client`), so the ratio is what cartd adds;
- cartd: time from POST to ready (median and max over the carts), POST
  latency, the download rate with every member of every tar verified, and
  the server's peak RSS and CPU seconds.

The tape scenarios use the fault-injecting archive, which keeps every file on
"tape" for a while, and count the archive requests spent while waiting. The
run prints a table, writes JSON, and exits 1 if any cart was wrong or stuck.
Scenarios with several rounds alternate baseline and cartd; "x raw" is the
median of each round's slowest cart over the median baseline.

End to end (the job a user waits for): from POST to the last byte of the cart's
tar, every member hashed as it arrives, against a raw client that asks the
archive HEAD and GET for each file and writes the bytes into a local tar, hashing
them as they arrive ("x raw e2e"). The "serving" section downloads a ready cart
of 1 MiB and one of 1 GiB with `curl` (first download, then from the page
cache) beside the same file served by a private `nginx` (sendfile on), and
gives cartd's peak RSS for each. `--variant` runs cartd's ways of writing a
pulled file (see `bench/variants/sitecustomize.py`) back to back in each round.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import hashlib
import http.client
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.tar_digests import TarDigests  # noqa: E402
from tests.support.archive_interface import ArchiveInterface, free_port  # noqa: E402
from tests.support.cartd_server import CartdServer  # noqa: E402
from tests.support.fault_archive import FaultArchive, Faults  # noqa: E402

#: Loaded into cartd (on `PYTHONPATH`) to switch how it writes a pulled file.
VARIANTS = Path(__file__).resolve().parent / "variants"
VARIANT_NAMES = ("direct", "cached", "dontneed", "nosync")

KiB, MiB, GiB = 1024, 1024**2, 1024**3
STUCK_AFTER = 600.0  # seconds without reaching ready or error
#: How often a waiting cart is asked about. Each HEAD costs the server 2-3 ms of CPU
#: on this VM, so a tighter loop would load it more than any real client does; a
#: cart is seen ready up to this much later than it is (the bias is against cartd).
POLL_INTERVAL = 0.05


@dataclass(frozen=True)
class Scenario:
    name: str
    carts: int
    files: int
    size: int
    tape_seconds: float = 0.0
    repeat: int = 1
    #: "interface": the real Archive Interface; "folder": a `file://` archive (no HTTP).
    archive: str = "interface"
    stuck_after: float = STUCK_AFTER


def many_files(count: int) -> Scenario:
    """One cart of `count` files of 1 KiB from a `file://` archive (no HTTP)."""
    return Scenario(
        f"file:// 1 cart x {count}x1KiB",
        1,
        count,
        KiB,
        archive="folder",
        stuck_after=STUCK_AFTER + count * 0.05,
    )


FULL = [
    Scenario("100x1MiB", 1, 100, MiB, repeat=5),
    Scenario("1000x4KiB", 1, 1000, 4 * KiB, repeat=5),
    Scenario("20 carts x 10x100KiB", 20, 10, 100 * KiB, repeat=20),
    Scenario("1x1GiB", 1, 1, GiB, repeat=5),
    Scenario("200 carts x 10x4KiB", 200, 10, 4 * KiB),
    Scenario("tape 5s 10x100KiB", 1, 10, 100 * KiB, tape_seconds=5.0),
    Scenario("tape 20s 10x100KiB", 1, 10, 100 * KiB, tape_seconds=20.0),
    many_files(100_000),
]
SMOKE = [
    Scenario("3x64KiB", 1, 3, 64 * KiB),
    Scenario("3 carts x 2x1KiB", 3, 2, KiB, repeat=2),
    Scenario("tape 1s 2x1KiB", 1, 2, KiB, tape_seconds=1.0),
    many_files(300),
]
#: Cart sizes of the serving section: one file each.
SERVING_FULL = (MiB, GiB)
SERVING_SMOKE = (64 * KiB, MiB)


@dataclass
class Result:
    scenario: str
    carts: int
    files_per_cart: int
    file_size: int
    #: How cartd wrote its pulls (`--variant`); "" for cartd as it is.
    variant: str = ""
    raw_seconds: float | None = None
    ready_median: float = 0.0
    ready_max: float = 0.0
    ratio_to_raw: float | None = None
    #: From POST to the first answer with a file verified (`X-Pacifica-Files-Staged`).
    first_pull_median: float | None = None
    first_pull_max: float | None = None
    post_ms_median: float = 0.0
    download_mb_s: float = 0.0
    peak_rss_mib: float = 0.0
    cpu_seconds: float = 0.0
    stuck: int = 0
    wrong: int = 0
    archive_requests_per_file: float | None = None
    beyond_tape_seconds: float | None = None
    #: End to end: the raw client writing a local tar; cartd from POST to the last byte.
    raw_e2e_seconds: float | None = None
    e2e_median: float | None = None
    e2e_max: float | None = None
    ratio_e2e_to_raw: float | None = None
    notes: list[str] = field(default_factory=list)


# -- files ---------------------------------------------------------------------------------


def content(seed: str, size: int) -> Iterator[bytes]:
    """Deterministic bytes: the same seed gives the same file in every run."""
    generator = random.Random(seed)
    left = size
    while left:
        step = min(left, 4 * MiB)
        yield generator.randbytes(step)
        left -= step


def write_files(folder: Path, scenario: Scenario, tag: str) -> list[list[dict[str, Any]]]:
    """Write each cart's files into the archive's folder; return each cart's `fileids`."""
    orders = []
    for cart in range(scenario.carts):
        fileids = []
        for number in range(scenario.files):
            file_id = f"{tag}-{cart}-{number}"
            digest = hashlib.sha1()
            with (folder / file_id).open("wb") as out:
                for chunk in content(file_id, scenario.size):
                    digest.update(chunk)
                    out.write(chunk)
            path = f"cart{cart}/dir{number % 10}/file{number}.bin"
            fileids.append(
                {"id": file_id, "path": path, "hashtype": "sha1", "hashsum": digest.hexdigest()}
            )
        orders.append(fileids)
    return orders


# -- the raw baseline ----------------------------------------------------------------------


def raw_folder(folder: Path, orders: list[list[dict[str, Any]]]) -> float:
    """The baseline of a `file://` archive: read and hash every file, one after another."""
    started = time.monotonic()
    for fileids in orders:
        for wanted in fileids:
            digest = hashlib.sha1()
            with (folder / wanted["id"]).open("rb") as handle:
                while chunk := handle.read(MiB):
                    digest.update(chunk)
            if digest.hexdigest() != wanted["hashsum"]:
                raise RuntimeError(f"raw baseline: {wanted['id']} has the wrong bytes")
    return time.monotonic() - started


def raw_baseline(archive_url: str, orders: list[list[dict[str, Any]]]) -> float:
    """What a cart needs of the archive, file after file, by the simplest client.

    It uses `http.client` on one keep-alive connection, as cartd itself talks to the
    archive, so the ratio measures what cartd adds, not a difference between HTTP clients.
    """
    parts = urlsplit(archive_url)
    started = time.monotonic()
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    try:
        for fileids in orders:
            for wanted in fileids:
                target = parts.path + quote(wanted["id"], safe="")
                for method in ("POST", "HEAD"):
                    connection.request(method, target, headers={"Content-Length": "0"})
                    response = connection.getresponse()
                    response.read()
                    if response.status >= 400:
                        raise RuntimeError(f"raw baseline: {method} {target}: {response.status}")
                connection.request("GET", target)
                response = connection.getresponse()
                digest = hashlib.sha1()
                while chunk := response.read(112 * KiB):
                    digest.update(chunk)
                if digest.hexdigest() != wanted["hashsum"]:
                    raise RuntimeError(f"raw baseline: {wanted['id']} has the wrong bytes")
    finally:
        connection.close()
    return time.monotonic() - started


class LocalTar:
    """A tar written member by member as the bytes arrive, as a plain client would keep a
    cart's files: buffered writes, no fsync, removed when closed."""

    def __init__(self, workdir: Path) -> None:
        descriptor, name = tempfile.mkstemp(dir=workdir, suffix=".tar")
        self.path = Path(name)
        self.out = open(descriptor, "wb")  # noqa: SIM115 (closed by `close`)

    def start(self, name: str, size: int) -> None:
        info = tarfile.TarInfo(f"data/{name}")
        info.size = size
        self.out.write(info.tobuf(format=tarfile.PAX_FORMAT))

    def end(self, size: int) -> None:
        self.out.write(b"\0" * (-size % 512))

    def close(self) -> None:
        self.out.write(b"\0" * 1024)
        self.out.close()
        self.path.unlink()


def raw_folder_tar(folder: Path, orders: list[list[dict[str, Any]]], workdir: Path) -> float:
    """The end-to-end baseline of a `file://` archive: every file read, hashed and written
    into a local tar, one after another."""
    started = time.monotonic()
    tar = LocalTar(workdir)
    try:
        for fileids in orders:
            for wanted in fileids:
                digest = hashlib.sha1()
                with (folder / wanted["id"]).open("rb") as handle:
                    size = os.fstat(handle.fileno()).st_size
                    tar.start(wanted["path"], size)
                    while chunk := handle.read(MiB):
                        digest.update(chunk)
                        tar.out.write(chunk)
                tar.end(size)
                if digest.hexdigest() != wanted["hashsum"]:
                    raise RuntimeError(f"raw baseline: {wanted['id']} has the wrong bytes")
    finally:
        tar.close()
    return time.monotonic() - started


def raw_to_tar(archive_url: str, orders: list[list[dict[str, Any]]], workdir: Path) -> float:
    """The end-to-end baseline: a plain client that asks the archive HEAD (the size) and GET
    for each file, one after another on one keep-alive connection, and writes the bytes
    into a local tar, hashing them as they arrive."""
    parts = urlsplit(archive_url)
    started = time.monotonic()
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    tar = LocalTar(workdir)
    try:
        for fileids in orders:
            for wanted in fileids:
                target = parts.path + quote(wanted["id"], safe="")
                connection.request("HEAD", target)
                response = connection.getresponse()
                response.read()
                if response.status >= 400:
                    raise RuntimeError(f"raw baseline: HEAD {target}: {response.status}")
                size = int(response.headers["X-Content-Length"])
                tar.start(wanted["path"], size)
                connection.request("GET", target)
                response = connection.getresponse()
                digest = hashlib.sha1()
                while chunk := response.read(112 * KiB):
                    digest.update(chunk)
                    tar.out.write(chunk)
                tar.end(size)
                if digest.hexdigest() != wanted["hashsum"]:
                    raise RuntimeError(f"raw baseline: {wanted['id']} has the wrong bytes")
    finally:
        connection.close()
        tar.close()
    return time.monotonic() - started


# -- cartd ---------------------------------------------------------------------------------


def process_usage(pid: int) -> tuple[float, float]:
    """Peak RSS (MiB) and CPU seconds of a process so far, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    peak_kib = next(
        int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")
    )
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    return peak_kib / 1024, ticks / 100


def download_and_verify(
    url: str, fileids: list[dict[str, Any]], top: str, *, live: bool = False
) -> tuple[int, bool]:
    """Stream a cart's tar, hashing every member as it arrives; its size and whether it
    holds exactly the files ordered. Nothing is held in memory, so the rate measured is
    cartd's, not that of a client gathering a gigabyte into one buffer. `live` asks with
    `Prefer: wait`, so a cart still being made is sent as its files are verified."""
    parts = urlsplit(url)
    timeout = STUCK_AFTER if live else 60
    connection = http.client.HTTPConnection(
        parts.hostname or "127.0.0.1", parts.port, timeout=timeout
    )
    try:
        headers = {"Prefer": "wait"} if live else {}
        connection.request("GET", f"{parts.path}?{parts.query}", headers=headers)
        response = connection.getresponse()
        while live and response.status == 202:
            # The sizes are not all known after the server's wait: ask again, as the
            # contract says a client may.
            response.read()
            connection.request("GET", f"{parts.path}?{parts.query}", headers=headers)
            response = connection.getresponse()
        if response.status != 200:
            return 0, False
        size = int(response.headers["Content-Length"])
        expected = {f"{top}/{wanted['path']}": wanted["hashsum"] for wanted in fileids}
        # Read in pieces as large as the raw baseline's, and hashed as lean (see
        # `bench.tar_digests`: `tarfile`'s stream reader cost three times as much CPU).
        reader = TarDigests()
        while piece := response.read(112 * KiB):
            reader.feed(piece)
        return size, reader.ended and reader.digests == expected
    finally:
        connection.close()


@dataclass
class Round:
    """What one round of a scenario measured of its carts."""

    readies: list[float] = field(default_factory=list)
    first_pulls: list[float] = field(default_factory=list)
    downloaded: int = 0
    polls: int = 0  # HEADs asked while waiting
    #: Each cart's POST to its last byte: time to ready plus its own download.
    e2es: list[float] = field(default_factory=list)


#: One round of a scenario on a fresh cartd: (scenario, archive URL, orders, workdir,
#: result to add to) -> what the round measured. `run_once` is the embedded one.
Runner = Callable[[Scenario, str, list[list[dict[str, Any]]], Path, Result], Round]


def run_carts(
    server: CartdServer,
    orders: list[list[dict[str, Any]]],
    result: Result,
    stuck_after: float = STUCK_AFTER,
    on_ready: Callable[[], None] | None = None,
    live: bool = False,
) -> Round:
    """POST every cart at once, wait for all, download and verify each.

    `on_ready` is called once every cart is ready or stuck, before any download. With
    `live`, each cart is also downloaded with `Prefer: wait` from the moment its POST is
    answered, and its end to end is that download's last byte (the downloads after ready
    still give the rate)."""
    uids = [f"bench-{time.monotonic_ns()}-{index}" for index in range(len(orders))]
    posted: dict[str, float] = {}
    latencies: list[float] = []

    live_ends: dict[str, float] = {}
    live_pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(32, len(orders)))
    live_downloads: list[concurrent.futures.Future[None]] = []

    def download_live(uid: str, fileids: list[dict[str, Any]]) -> None:
        _, right = download_and_verify(
            f"{server.url}/{uid}?filename=data", fileids, "data", live=True
        )
        if right:
            live_ends[uid] = time.monotonic() - posted[uid]
        else:
            result.wrong += 1
            result.notes.append(f"{uid}: wrong or cut tar with Prefer: wait")

    def post(pair: tuple[str, list[dict[str, Any]]]) -> None:
        uid, fileids = pair
        with httpx.Client(timeout=120) as client:
            started = time.monotonic()
            response = client.post(f"{server.url}/{uid}", json={"fileids": fileids})
            latencies.append(time.monotonic() - started)
            posted[uid] = started
            response.raise_for_status()
        if live:  # from the moment the POST is answered
            live_downloads.append(live_pool.submit(download_live, uid, fileids))

    with concurrent.futures.ThreadPoolExecutor(max_workers=min(32, len(orders))) as pool:
        list(pool.map(post, zip(uids, orders, strict=True)))

    ready_after: dict[str, float] = {}
    first_pull: dict[str, float] = {}
    polls = 0
    pending = set(uids)
    deadline = time.monotonic() + stuck_after
    with httpx.Client(base_url=server.url, timeout=60) as client:
        while pending and time.monotonic() < deadline:
            for uid in sorted(pending):
                head = client.head(f"/{uid}")
                polls += 1
                status = head.headers.get("X-Pacifica-Status")
                staged = int(head.headers.get("X-Pacifica-Files-Staged") or 0)
                if uid not in first_pull and (staged or status == "ready"):
                    first_pull[uid] = time.monotonic() - posted[uid]
                if status == "staging":
                    continue
                pending.discard(uid)
                if head.headers.get("X-Pacifica-Status") == "ready":
                    ready_after[uid] = time.monotonic() - posted[uid]
                else:
                    result.wrong += 1
                    result.notes.append(f"{uid}: {head.headers.get('X-Pacifica-Message')}")
            time.sleep(POLL_INTERVAL)
        result.stuck += len(pending)
        for done in live_downloads:  # done before the downloads that measure the rate
            done.result()
        if on_ready is not None:
            on_ready()
        downloaded, seconds = 0, 0.0
        e2es = []
        for uid, fileids in zip(uids, orders, strict=True):
            if uid not in ready_after:
                continue
            started = time.monotonic()
            size, right = download_and_verify(f"{server.url}/{uid}?filename=data", fileids, "data")
            took = time.monotonic() - started
            seconds += took
            if not live:
                e2es.append(ready_after[uid] + took)
            downloaded += size
            if not right:
                result.wrong += 1
                result.notes.append(f"{uid}: wrong tar")
    live_pool.shutdown()
    e2es += live_ends.values()
    result.post_ms_median = max(result.post_ms_median, statistics.median(latencies) * 1000)
    if seconds:
        rate = downloaded / seconds / 1e6
        result.download_mb_s = rate if not result.download_mb_s else min(result.download_mb_s, rate)
    return Round(list(ready_after.values()), list(first_pull.values()), downloaded, polls, e2es)


def on_tape(archive: FaultArchive, scenario: Scenario, tag: str) -> list[list[dict[str, Any]]]:
    """Store each cart's files on the fault archive's "tape"; return each cart's `fileids`."""
    orders = []
    for cart in range(scenario.carts):
        fileids = []
        for number in range(scenario.files):
            file_id = f"{tag}-{cart}-{number}"
            data = b"".join(content(file_id, scenario.size))
            archive.add(file_id, data, faults=Faults(tape_seconds=scenario.tape_seconds))
            fileids.append(
                {
                    "id": file_id,
                    "path": f"f{number}.bin",
                    "hashtype": "sha1",
                    "hashsum": hashlib.sha1(data).hexdigest(),
                }
            )
        orders.append(fileids)
    return orders


def measure(
    scenario: Scenario,
    workdir: Path,
    runners: Mapping[str, Runner] | None = None,
    new_result: Callable[[Scenario, str], Result] | None = None,
    *,
    end_to_end: bool = True,
) -> list[Result]:
    """Every round of the scenario with each runner (embedded `run_once` by default),
    the runners taking turns after each round's baseline (and, with `end_to_end`, the
    baseline that writes a local tar); one result per runner."""
    runners = runners or {"": run_once}
    make = new_result or (lambda s, mode: Result(s.name, s.carts, s.files, s.size, variant=mode))
    results = {mode: make(scenario, mode) for mode in runners}
    rounds: dict[str, list[Round]] = {mode: [] for mode in runners}
    tag = hashlib.sha1(scenario.name.encode()).hexdigest()[:8]
    raws: list[float] = []
    raw_e2es: list[float] = []
    if scenario.tape_seconds:
        with FaultArchive() as archive:
            for mode, runner in runners.items():
                # Stored afresh for each runner: every one finds its files on tape.
                orders = on_tape(archive, scenario, tag)
                asked = len(archive.requests)
                rounds[mode].append(runner(scenario, archive.url, orders, workdir, results[mode]))
                asked = len(archive.requests) - asked
                results[mode].archive_requests_per_file = asked / (scenario.carts * scenario.files)
    elif scenario.archive == "folder":
        folder = Path(tempfile.mkdtemp(dir=workdir, prefix="archive-"))
        orders = write_files(folder, scenario, tag)
        for _ in range(scenario.repeat):
            raws.append(raw_folder(folder, orders))
            if end_to_end:
                raw_e2es.append(raw_folder_tar(folder, orders, workdir))
            for mode, runner in runners.items():
                rounds[mode].append(
                    runner(scenario, folder.as_uri(), orders, workdir, results[mode])
                )
        shutil.rmtree(folder, ignore_errors=True)
    else:
        with ArchiveInterface() as archive:
            orders = write_files(archive.prefix, scenario, tag)
            # Rounds alternate baseline and cartd, so a slow spell of a shared machine
            # slows both; the ratio is of medians over the rounds.
            for _ in range(scenario.repeat):
                raws.append(raw_baseline(archive.url, orders))
                if end_to_end:
                    raw_e2es.append(raw_to_tar(archive.url, orders, workdir))
                for mode, runner in runners.items():
                    rounds[mode].append(
                        runner(scenario, archive.url, orders, workdir, results[mode])
                    )
    for mode, result in results.items():
        summarize(scenario, result, rounds[mode], raws, raw_e2es)
    return list(results.values())


def summarize(
    scenario: Scenario,
    result: Result,
    rounds: list[Round],
    raws: list[float],
    raw_e2es: list[float] | None = None,
) -> None:
    """Medians and maxima over a runner's rounds, and the ratios to the baselines."""
    e2es = [e2e for one in rounds for e2e in one.e2es]
    if e2es:
        result.e2e_median = statistics.median(e2es)
        result.e2e_max = max(e2es)
    if raw_e2es:
        result.raw_e2e_seconds = statistics.median(raw_e2es)
        slowest_e2e = [max(one.e2es) for one in rounds if one.e2es]
        if slowest_e2e:
            result.ratio_e2e_to_raw = statistics.median(slowest_e2e) / result.raw_e2e_seconds
    readies = [ready for one in rounds for ready in one.readies]
    firsts = [first for one in rounds for first in one.first_pulls]
    slowest = [max(one.readies) for one in rounds if one.readies]
    if raws:
        result.raw_seconds = statistics.median(raws)
        if slowest:
            result.ratio_to_raw = statistics.median(slowest) / result.raw_seconds
    if readies:
        result.ready_median = statistics.median(readies)
        result.ready_max = max(readies)
    if firsts:
        result.first_pull_median = statistics.median(firsts)
        result.first_pull_max = max(firsts)
    if scenario.tape_seconds and readies:
        result.beyond_tape_seconds = result.ready_max - scenario.tape_seconds


def variant_env(variant: str) -> dict[str, str]:
    """The environment that makes cartd write its pulls the `variant` way ("": as it is)."""
    if not variant:
        return {}
    return {"PYTHONPATH": str(VARIANTS), "CARTD_BENCH_WRITE": variant}


def embedded(variant: str = "", live: bool = False) -> Runner:
    """A runner of one fresh cartd (defaults, empty volume) for each round; with `live`,
    its end to end is that of downloads asked with `Prefer: wait` right after the POST."""

    def runner(
        scenario: Scenario,
        archive_url: str,
        orders: list[list[dict[str, Any]]],
        workdir: Path,
        result: Result,
    ) -> Round:
        folder = Path(tempfile.mkdtemp(dir=workdir))
        env = {
            "ARCHIVE_INTERFACE_URL": archive_url,
            "VOLUME_PATH": str(folder / "volume"),
            **variant_env(variant),
        }
        with CartdServer(folder, env, policy={}) as server:
            assert server.process is not None
            measured = run_carts(server, orders, result, scenario.stuck_after, live=live)
            rss, cpu = process_usage(server.process.pid)
        shutil.rmtree(folder, ignore_errors=True)
        result.peak_rss_mib = max(result.peak_rss_mib, rss)
        result.cpu_seconds = max(result.cpu_seconds, cpu)
        return measured

    return runner


run_once = embedded()


# -- serving a ready cart ------------------------------------------------------------------

#: A private nginx serving one folder on a loopback port, as sendfile serves a static file.
NGINX_CONF = """\
daemon off;
{user}worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log;
events {{ worker_connections 16; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


@dataclass
class Serving:
    """One ready cart of one file, downloaded by curl, and the same file by nginx."""

    size: int
    variant: str = ""
    ready_seconds: float = 0.0
    #: curl into /dev/null: the first download after ready, then the median of three more.
    first_mb_s: float | None = None
    cached_mb_s: float | None = None
    #: The staged file itself served by nginx: the median of three after one to warm up.
    nginx_mb_s: float | None = None
    peak_rss_mib: float = 0.0
    wrong: int = 0
    notes: list[str] = field(default_factory=list)


def curl_rate(url: str) -> float:
    """MB/s of one download by curl into /dev/null (connection set-up included)."""
    done = subprocess.run(
        ["curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download} %{time_total}", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    size, seconds = done.stdout.split()
    return float(size) / float(seconds) / 1e6


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (str(path) for path in (Path("/usr/sbin/nginx"),) if path.exists()), None
    )


@contextlib.contextmanager
def nginx(root: Path, workdir: Path) -> Iterator[str]:
    """A private nginx (not a daemon: a child of this process) serving `root`; its URL."""
    binary = nginx_binary()
    if binary is None:
        raise FileNotFoundError("nginx")
    folder = Path(tempfile.mkdtemp(dir=workdir, prefix="nginx-"))
    port = free_port()
    config = folder / "nginx.conf"
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read the volume
    config.write_text(NGINX_CONF.format(user=user, folder=folder, port=port, root=root))
    with (folder / "stderr").open("wb") as errors:
        process = subprocess.Popen(
            [binary, "-p", str(folder), "-c", str(config), "-e", str(folder / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log = (folder / "stderr").read_text() + (folder / "error.log").read_text()
                    raise RuntimeError(f"nginx did not start: {log[-500:]}") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)


def serve_once(size: int, variant: str, workdir: Path) -> Serving:
    """A fresh cartd makes a cart of one file of `size` from a `file://` archive; curl
    downloads it four times, the client of the scenarios once more (every member hashed),
    then nginx serves the staged file."""
    row = Serving(size, variant)
    folder = Path(tempfile.mkdtemp(dir=workdir))
    archive = folder / "archive"
    archive.mkdir()
    scenario = Scenario(f"serving {size}", 1, 1, size, archive="folder")
    fileids = write_files(archive, scenario, f"serve{size}")[0]
    env = {
        "ARCHIVE_INTERFACE_URL": archive.as_uri(),
        "VOLUME_PATH": str(folder / "volume"),
        **variant_env(variant),
    }
    try:
        with CartdServer(folder, env, policy={}) as server:
            assert server.process is not None
            uid = f"serve-{time.monotonic_ns()}"
            started = time.monotonic()
            with httpx.Client(base_url=server.url, timeout=120) as client:
                client.post(f"/{uid}", json={"fileids": fileids}).raise_for_status()
                status = "staging"
                while status == "staging" and time.monotonic() - started < STUCK_AFTER:
                    time.sleep(POLL_INTERVAL)
                    status = client.head(f"/{uid}").headers.get("X-Pacifica-Status", "")
            row.ready_seconds = time.monotonic() - started
            if status != "ready":
                row.wrong += 1
                row.notes.append(f"{uid}: {status}")
                return row
            url = f"{server.url}/{uid}?filename=data"
            if shutil.which("curl"):
                row.first_mb_s = curl_rate(url)
                row.cached_mb_s = statistics.median(curl_rate(url) for _ in range(3))
            else:
                row.notes.append("curl is not installed: no curl rates")
            if download_and_verify(url, fileids, "data")[1] is False:
                row.wrong += 1
                row.notes.append(f"{uid}: wrong tar")
            row.peak_rss_mib = process_usage(server.process.pid)[0]
            staged = next((folder / "volume").glob("carts/*/files/*"))
            if nginx_binary() is None:
                row.notes.append("nginx is not installed (apt-get install nginx): no nginx rate")
            elif shutil.which("curl"):
                with nginx(staged.parent, folder) as base:
                    curl_rate(f"{base}/{staged.name}")
                    rates = [curl_rate(f"{base}/{staged.name}") for _ in range(3)]
                    row.nginx_mb_s = statistics.median(rates)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return row


# -- report --------------------------------------------------------------------------------


def number(value: float | None, digits: int = 2) -> str:
    """A figure of a table; `-` when there is none."""
    return "-" if value is None else f"{value:.{digits}f}"


def table(results: list[Result]) -> str:
    header = (
        f"{'scenario':<34} {'raw s':>7} {'1st pull':>8} {'ready med':>9} {'ready max':>9}"
        f" {'x raw':>6} {'raw e2e':>7} {'e2e med':>7} {'e2e max':>7} {'x raw e2e':>9}"
        f" {'POST ms':>8} {'dl MB/s':>8} {'RSS MiB':>8} {'CPU s':>6} {'req/file':>8}"
        f" {'stuck':>5} {'wrong':>5}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        name = f"{r.scenario} [{r.variant}]" if r.variant else r.scenario
        lines.append(
            f"{name:<34} {number(r.raw_seconds):>7} {number(r.first_pull_median):>8}"
            f" {number(r.ready_median):>9} {number(r.ready_max):>9} {number(r.ratio_to_raw):>6}"
            f" {number(r.raw_e2e_seconds):>7} {number(r.e2e_median):>7}"
            f" {number(r.e2e_max):>7} {number(r.ratio_e2e_to_raw):>9}"
            f" {number(r.post_ms_median, 1):>8}"
            f" {number(r.download_mb_s, 0):>8} {number(r.peak_rss_mib, 0):>8}"
            f" {number(r.cpu_seconds, 1):>6} {number(r.archive_requests_per_file, 1):>8}"
            f" {r.stuck:>5} {r.wrong:>5}"
        )
    return "\n".join(lines)


def size_name(size: int) -> str:
    for unit, name in ((GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB")):
        if size >= unit:
            return f"{size / unit:g} {name}"
    return f"{size} B"


def serving_table(rows: list[Serving]) -> str:
    header = (
        f"{'serving a cart of':<28} {'ready s':>7} {'curl 1st MB/s':>13} {'curl cached MB/s':>16}"
        f" {'nginx MB/s':>10} {'x nginx':>7} {'RSS MiB':>8} {'wrong':>5}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        name = size_name(r.size) + (f" [{r.variant}]" if r.variant else "")
        share = r.cached_mb_s / r.nginx_mb_s if r.cached_mb_s and r.nginx_mb_s else None
        lines.append(
            f"{name:<28} {number(r.ready_seconds):>7} {number(r.first_mb_s, 0):>13}"
            f" {number(r.cached_mb_s, 0):>16} {number(r.nginx_mb_s, 0):>10}"
            f" {number(share):>7} {number(r.peak_rss_mib, 1):>8} {r.wrong:>5}"
        )
    return "\n".join(lines)


def describe() -> dict[str, str]:
    """When, where and with what a run was made."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {platform.processor()}".strip(),
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check the bench")
    parser.add_argument(
        "--only", action="append", help="run only the scenario of that name ('serving' too)"
    )
    parser.add_argument(
        "--variant",
        action="append",
        choices=VARIANT_NAMES,
        help="run cartd writing its pulls this way (bench/variants); several take turns",
    )
    parser.add_argument("--rounds", type=int, help="at most this many rounds a scenario")
    parser.add_argument(
        "--live",
        action="store_true",
        help="end to end with `Prefer: wait` downloads from the POST (cartd's own client way)",
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    scenarios = SMOKE if args.smoke else FULL
    if args.only:
        scenarios = [s for s in scenarios if s.name in args.only]
    if args.rounds:
        scenarios = [
            Scenario(**{**asdict(s), "repeat": min(s.repeat, args.rounds)}) for s in scenarios
        ]
    variants = args.variant or [""]
    runners = {variant: embedded(variant, args.live) for variant in variants}
    results: list[Result] = []
    serving: list[Serving] = []
    with tempfile.TemporaryDirectory(prefix="cartd-bench-") as workdir:
        for scenario in scenarios:
            print(f"running {scenario.name} ...", file=sys.stderr, flush=True)
            results += measure(scenario, Path(workdir), runners)
        if not args.only or "serving" in args.only:
            for size in SERVING_SMOKE if args.smoke else SERVING_FULL:
                for variant in variants:
                    print(f"serving {size_name(size)} {variant} ...", file=sys.stderr, flush=True)
                    serving.append(serve_once(size, variant, Path(workdir)))
    print(table(results))
    for result in results:
        for note in result.notes[:5]:
            print(f"  {result.scenario}: {note}")
    if serving:
        print()
        print(serving_table(serving))
        for row in serving:
            for note in row.notes[:5]:
                print(f"  {size_name(row.size)}: {note}")
    document = {
        **describe(),
        "results": [asdict(result) for result in results],
        "serving": [asdict(row) for row in serving],
    }
    if args.json:
        args.json.write_text(json.dumps(document, indent=2))
    bad = sum(result.stuck + result.wrong for result in results)
    bad += sum(row.wrong for row in serving)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
