"""Benchmark cartd's distributed mode against its embedded mode, in one run, on this machine.

    python bench/distributed.py                  # every scenario, full size (about 30 minutes)
    python bench/distributed.py --smoke          # tiny sizes: checks the benchmark itself works
    python bench/distributed.py --only 1000x4KiB --workers 1 --json out.json
    python bench/distributed.py --broker redis --database mysql --many-files 20000

The scenarios of `bench/run.py` plus one cart of many 1 KiB files from a `file://`
archive, each round run by every mode in turn after the round's raw baseline: the
embedded mode (`cartd serve` alone, SQLite, as `bench/run.py` runs it) and `cartd serve`
with 1 and 2 `cartd worker` processes (PostgreSQL and RabbitMQ by default), each round on
fresh processes, a fresh database and a queue of its own. Every setting is cartd's
default; a worker runs as many threads as the embedded runner (`--concurrency`).

Measured between the POSTs and the moment every cart is ready (downloads excluded):

- CPU of each process, per file: the API process and the workers (their process groups,
  from /proc); the database: the PostgreSQL backends serving the bench's own database
  (found by their command line, sampled every 0.2 s), or the whole `mariadbd`; the
  broker: the whole `beam.smp` or `redis-server`. The whole-server figures are deltas
  of servers other clients may be using at the same time.
- Database round-trips, per file, for the workers and the API process: counted in the
  client by `bench/probe/sitecustomize.py` (SQLAlchemy's events: statements, BEGIN,
  COMMIT and ROLLBACK outside autocommit, the pool's reset on return, and the dialect's
  pings of idle connections) and summed the way the driver sends them. The API's
  include the benchmark's own polls (HEAD every 50 ms per waiting cart; their number
  is shown). With PostgreSQL, the server's count of transactions in the bench's
  database (`pg_stat_database.xact_commit + xact_rollback`, read after the processes
  exited, so over their whole life, start-up included) checks it; `pg_stat_statements`
  is not loaded on this machine.
- Broker messages, per file: the tasks the workers received (Celery's "received" log
  lines; a message delivered twice counts twice), and any left in the queue.
- Peak RSS of the API process and the largest worker (VmHWM), and the largest resident
  size sampled of the database backends and the broker.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as base  # noqa: E402
from run import KiB, Result, Round, Scenario, many_files  # noqa: E402

from tests.conftest import DATABASE_SERVERS, run_cartd, scratch_database  # noqa: E402
from tests.support.brokers import scratch_queue  # noqa: E402
from tests.support.cartd_server import CartdServer, CartdWorker  # noqa: E402

PROBE = HERE / "probe"
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
EMBEDDED = "embedded"


def mode_name(workers: int) -> str:
    return f"{workers} wrk" if workers else EMBEDDED


def full(count: int) -> list[Scenario]:
    return [*(s for s in base.FULL if s.archive != "folder"), many_files(count)]


def smoke(count: int) -> list[Scenario]:
    return [
        Scenario("3 carts x 2x1KiB", 3, 2, KiB),
        Scenario("tape 1s 2x1KiB", 1, 2, KiB, tape_seconds=1.0),
        many_files(count),
    ]


@dataclass
class DistributedResult(Result):
    mode: str = EMBEDDED
    workers: int = 0
    #: The median over rounds of the slowest cart over the embedded mode's (same run).
    ratio_to_embedded: float | None = None
    files_measured: int = 0
    cpu_ms_per_file: dict[str, float] = field(default_factory=dict)
    peak_rss_mib_of: dict[str, float] = field(default_factory=dict)
    db_round_trips_per_file: dict[str, float] = field(default_factory=dict)
    db_calls: dict[str, dict[str, int]] = field(default_factory=dict)
    db_transactions_per_file: float | None = None
    broker_messages_per_file: float | None = None
    messages_left_in_queue: int = 0
    polls_per_file: float = 0.0
    slowest: list[float] = field(default_factory=list)


# -- /proc -----------------------------------------------------------------------------------


def _stat(pid: int | str) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_of(pid: int | str, children: bool = False) -> float:
    """CPU seconds of a process (and of its children it has waited for)."""
    fields = _stat(pid)
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICKS


def group_cpu(pgid: int) -> float:
    """CPU seconds of a process group: its live members, and the members that ended."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int(_stat(entry.name)[2]) == pgid:
                    total += cpu_of(entry.name, children=True)
    return total


def peak_rss(pid: int) -> float:
    """VmHWM in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return 0.0


def processes(match: Any) -> list[int]:
    """PIDs whose command line (NULs as spaces) satisfies `match`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                line = (
                    (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                )
                if line and match(line):
                    found.append(int(entry.name))
    return found


BROKER_PROCESS = {"rabbitmq": "/beam.smp ", "redis": "redis-server "}


class ServerSampler:
    """Samples, every 0.2 s, the CPU and resident size of the database and broker
    processes: PostgreSQL's backends of one database (they come and go with the pools),
    or the whole MariaDB server, and the broker."""

    def __init__(self, broker: str, database: str, database_name: str) -> None:
        self.broker, self.database, self.name = broker, database, database_name
        self.cpu: dict[str, dict[int, float]] = {"database": {}, "broker": {}}
        self.rss: dict[str, float] = {"database": 0.0, "broker": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _roles(self) -> dict[str, list[int]]:
        if self.database == "postgres":
            needle = f" {self.name} "
            db = processes(lambda line: line.startswith("postgres: ") and needle in line)
        else:
            db = processes(lambda line: line.startswith("/usr/sbin/mariadbd"))
        broker = BROKER_PROCESS[self.broker]
        return {"database": db, "broker": processes(lambda line: broker in f"{line} ")}

    def sample(self) -> None:
        for role, pids in self._roles().items():
            for pid in pids:
                with contextlib.suppress(OSError, IndexError):
                    self.cpu[role][pid] = cpu_of(pid)
                    resident = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
                    self.rss[role] = max(self.rss[role], resident * PAGE / 2**20)

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            self.sample()

    def snapshot(self) -> dict[str, dict[int, float]]:
        self.sample()
        return {role: dict(cpus) for role, cpus in self.cpu.items()}

    def __enter__(self) -> ServerSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- one deployment --------------------------------------------------------------------------


def probe_counts(folder: Path, pids: set[int]) -> dict[str, int]:
    """The probe's counts of the processes in `pids` (the members of their groups)."""
    total: dict[str, int] = {}
    for path in folder.glob("*.json"):
        if int(path.stem) in pids:
            with contextlib.suppress(ValueError, OSError):
                for name, count in json.loads(path.read_text()).items():
                    total[name] = total.get(name, 0) + count
    return total


def round_trips(calls: dict[str, int], database: str) -> int:
    """What the driver sends for the calls counted (the probe leaves out those made in
    autocommit): psycopg sends BEGIN on its own and skips the reset of a connection not
    in a transaction; PyMySQL begins implicitly and rolls back on every reset; a ping is
    one round-trip."""
    sent = calls.get("statements", 0) + calls.get("commits", 0) + calls.get("rollbacks", 0)
    if database == "sqlite":
        return sent
    sent += calls.get("pings", 0)
    if database == "postgres":
        return sent + calls.get("begins", 0)
    return sent + calls.get("resets", 0)


def group_members(pgid: int) -> set[int]:
    members = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int(_stat(entry.name)[2]) == pgid:
                    members.add(int(entry.name))
    return members


def received(worker: CartdWorker) -> int:
    """Tasks the worker took from the broker (Celery logs each as "received")."""
    return sum(1 for line in worker.log().splitlines() if "] received" in line)


@dataclass
class Deployment:
    """The processes of one round, and where to measure them."""

    server: CartdServer
    workers: list[CartdWorker]
    database: str
    probe: Path
    sampler: ServerSampler | None
    queue_depth: Any = None
    database_url: str = ""
    # role -> pids seen in it (so a probe file of an ended process still counts)
    members: dict[str, set[int]] = field(default_factory=dict)

    def groups(self) -> dict[str, list[int]]:
        assert self.server.process is not None
        pgids = {"api": [self.server.process.pid]}
        pgids["worker"] = [w.process.pid for w in self.workers if w.process is not None]
        return pgids

    def snapshot(self) -> dict[str, Any]:
        shot: dict[str, Any] = {"at": time.monotonic()}
        for role, pgids in self.groups().items():
            shot[f"cpu {role}"] = sum(group_cpu(pgid) for pgid in pgids)
            pids = self.members.setdefault(role, set())
            for pgid in pgids:
                pids |= group_members(pgid)
            shot[f"calls {role}"] = probe_counts(self.probe, pids)
        shot["received"] = sum(received(worker) for worker in self.workers)
        if self.sampler is not None:
            shot["servers"] = self.sampler.snapshot()
        return shot


@contextlib.contextmanager
def deploy(
    folder: Path, archive_url: str, workers: int, broker: str, database: str, concurrency: int
) -> Iterator[Deployment]:
    probe = folder / "probe"
    probe.mkdir(parents=True)
    env = {
        "ARCHIVE_INTERFACE_URL": archive_url,
        "VOLUME_PATH": str(folder / "volume"),
        "PYTHONPATH": str(PROBE),
        "CARTD_BENCH_PROBE": str(probe),
    }
    with contextlib.ExitStack() as stack:
        if not workers:  # the embedded default, as bench/run.py runs it
            server = stack.enter_context(CartdServer(folder, env, policy={}))
            yield Deployment(server, [], "sqlite", probe, None)
            return
        queue = stack.enter_context(scratch_queue(broker))
        url = stack.enter_context(scratch_database(database))
        env.update(queue.env(), PEEWEE_URL=url)
        synced = run_cartd("dbsync", env={"HOME": str(folder), **env})
        if synced.returncode:
            raise RuntimeError(f"cartd dbsync failed: {synced.stderr}")
        name = url.rsplit("/", 1)[1]
        sampler = stack.enter_context(ServerSampler(broker, database, name))
        server = stack.enter_context(CartdServer(folder, env, policy={}))
        started = [
            stack.enter_context(
                CartdWorker(folder, env, concurrency, policy={}, name=f"worker{number}")
            )
            for number in range(workers)
        ]
        yield Deployment(server, started, database, probe, sampler, queue.depth, url)


def transactions(database_url: str) -> int:
    """Transactions PostgreSQL counted in this database (its processes must have exited:
    a live backend reports its counts only now and then)."""
    from sqlalchemy import create_engine, text

    name = database_url.rsplit("/", 1)[1]
    engine = create_engine(DATABASE_SERVERS["postgres"][0])
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_stat_clear_snapshot()"))
            row = connection.execute(
                text("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = :n"),
                {"n": name},
            ).one()
            return int(row[0])
    finally:
        engine.dispose()


# -- a runner per mode -------------------------------------------------------------------------


@dataclass
class Totals:
    """What a mode's rounds add up to, for the per-file figures."""

    files: int = 0
    polls: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    calls: dict[str, dict[str, int]] = field(default_factory=dict)
    transactions: int | None = None
    transaction_files: int = 0
    messages: int = 0
    left: int = 0

    def add_cpu(self, role: str, seconds: float) -> None:
        self.cpu[role] = self.cpu.get(role, 0.0) + seconds


def make_runner(
    workers: int, broker: str, database: str, concurrency: int, totals: Totals
) -> base.Runner:
    def runner(
        scenario: Scenario,
        archive_url: str,
        orders: list[list[dict[str, Any]]],
        workdir: Path,
        result: Result,
    ) -> Round:
        assert isinstance(result, DistributedResult)
        folder = Path(tempfile.mkdtemp(dir=workdir))
        files = sum(len(fileids) for fileids in orders)
        with deploy(folder, archive_url, workers, broker, database, concurrency) as deployment:
            shots = [deployment.snapshot()]

            def on_ready() -> None:
                time.sleep(0.3)  # the probe writes its counts every 0.2 s
                shots.append(deployment.snapshot())

            measured = base.run_carts(
                deployment.server,
                orders,
                result,
                scenario.stuck_after,
                on_ready=on_ready,
            )
            assert deployment.server.process is not None
            result.peak_rss_mib_of["api"] = max(
                result.peak_rss_mib_of.get("api", 0.0), peak_rss(deployment.server.process.pid)
            )
            for worker in deployment.workers:
                assert worker.process is not None
                result.peak_rss_mib_of["worker"] = max(
                    result.peak_rss_mib_of.get("worker", 0.0), peak_rss(worker.process.pid)
                )
            if deployment.queue_depth is not None:
                totals.left += deployment.queue_depth()
            for process in (*deployment.workers, deployment.server):
                process.stop()
            if deployment.sampler is not None:
                for role, mib in deployment.sampler.rss.items():
                    result.peak_rss_mib_of[role] = max(result.peak_rss_mib_of.get(role, 0.0), mib)
            if database == "postgres" and deployment.database_url:
                counted = transactions(deployment.database_url)
                totals.transactions = (totals.transactions or 0) + counted
                totals.transaction_files += files
        shutil.rmtree(folder, ignore_errors=True)
        before, after = shots[0], shots[-1]
        totals.files += files
        totals.polls += measured.polls
        for role in ("api", "worker"):
            totals.add_cpu(role, after[f"cpu {role}"] - before[f"cpu {role}"])
            calls = totals.calls.setdefault(role, {})
            for name, count in after[f"calls {role}"].items():
                calls[name] = calls.get(name, 0) + count - before[f"calls {role}"].get(name, 0)
        if "servers" in after:
            for role, cpus in after["servers"].items():
                earlier = before["servers"][role]
                totals.add_cpu(role, sum(cpu - earlier.get(pid, 0.0) for pid, cpu in cpus.items()))
        totals.messages += after["received"] - before["received"]
        result.slowest.append(max(measured.readies) if measured.readies else float("nan"))
        return measured

    return runner


def finish(result: DistributedResult, totals: Totals, database: str) -> None:
    files = totals.files or 1
    result.files_measured = totals.files
    result.polls_per_file = totals.polls / files
    result.cpu_ms_per_file = {role: cpu * 1000 / files for role, cpu in totals.cpu.items()}
    result.db_calls = totals.calls
    kind = "sqlite" if not result.workers else database
    result.db_round_trips_per_file = {
        role: round_trips(calls, kind) / files for role, calls in totals.calls.items()
    }
    if totals.transactions is not None and totals.transaction_files:
        result.db_transactions_per_file = totals.transactions / totals.transaction_files
    if result.workers:
        result.broker_messages_per_file = totals.messages / files
        result.messages_left_in_queue = totals.left


def compare(results: list[DistributedResult]) -> None:
    """Each mode's median slowest cart over the embedded mode's, scenario by scenario."""
    embedded = {r.scenario: r for r in results if r.mode == EMBEDDED}
    for result in results:
        reference = embedded.get(result.scenario)
        if reference is None or result is reference:
            continue
        mine = [s for s in result.slowest if s == s]
        theirs = [s for s in reference.slowest if s == s]
        if mine and theirs:
            result.ratio_to_embedded = statistics.median(mine) / statistics.median(theirs)


# -- report ------------------------------------------------------------------------------------


def table(results: list[DistributedResult]) -> str:
    number = base.number
    header = (
        f"{'scenario':<28} {'mode':<9} {'1st pull':>8} {'ready med':>9} {'ready max':>9}"
        f" {'x emb':>6} {'POST ms':>8} | {'CPU ms/file: wrk':>16} {'api':>6} {'db':>6}"
        f" {'brk':>6} | {'db rt/file: wrk':>15} {'api':>6} {'xact':>6} | {'msg/f':>5}"
        f" {'polls/f':>7} | {'RSS wrk':>7} {'api':>5} | {'stuck':>5} {'wrong':>5}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        cpu, trips = r.cpu_ms_per_file, r.db_round_trips_per_file
        lines.append(
            f"{r.scenario:<28} {r.mode:<9} {number(r.first_pull_median):>8}"
            f" {number(r.ready_median):>9} {number(r.ready_max):>9}"
            f" {number(r.ratio_to_embedded):>6} {number(r.post_ms_median, 1):>8} |"
            f" {number(cpu.get('worker'), 2):>16} {number(cpu.get('api'), 2):>6}"
            f" {number(cpu.get('database'), 2):>6} {number(cpu.get('broker'), 2):>6} |"
            f" {number(trips.get('worker'), 2):>15} {number(trips.get('api'), 2):>6}"
            f" {number(r.db_transactions_per_file, 2):>6} |"
            f" {number(r.broker_messages_per_file, 2):>5} {number(r.polls_per_file, 1):>7} |"
            f" {number(r.peak_rss_mib_of.get('worker'), 0):>7}"
            f" {number(r.peak_rss_mib_of.get('api'), 0):>5} | {r.stuck:>5} {r.wrong:>5}"
        )
    return "\n".join(lines)


def machine_load() -> dict[str, Any]:
    """The load average and the CPU time of the whole machine (steal included) so far."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    names = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]
    return {
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "cpu_seconds": {
            name: int(value) / TICKS for name, value in zip(names, fields, strict=False)
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check the bench")
    parser.add_argument("--only", action="append", help="run only the scenario of that name")
    parser.add_argument(
        "--workers",
        default="0,1,2",
        help="modes to run, comma-separated: 0 is the embedded mode, N a cluster of N workers",
    )
    parser.add_argument("--broker", choices=["rabbitmq", "redis"], default="rabbitmq")
    parser.add_argument("--database", choices=["postgres", "mysql"], default="postgres")
    parser.add_argument(
        "--concurrency", type=int, default=4, help="threads a worker (the embedded runner's 4)"
    )
    parser.add_argument(
        "--many-files", type=int, help="files of the file:// cart (default 100000, smoke 300)"
    )
    parser.add_argument("--rounds", type=int, help="at most this many rounds a scenario")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    count = args.many_files or (300 if args.smoke else 100_000)
    scenarios = smoke(count) if args.smoke else full(count)
    if args.only:
        scenarios = [s for s in scenarios if s.name in args.only]
    if args.rounds:
        scenarios = [
            Scenario(**{**asdict(s), "repeat": min(s.repeat, args.rounds)}) for s in scenarios
        ]
    modes = {mode_name(int(part)): int(part) for part in args.workers.split(",")}
    load_before = machine_load()
    results: list[DistributedResult] = []
    with tempfile.TemporaryDirectory(prefix="cartd-bench-") as workdir:
        for scenario in scenarios:
            print(f"running {scenario.name} ...", file=sys.stderr, flush=True)
            totals = {mode: Totals() for mode in modes}
            runners = {
                mode: make_runner(
                    workers, args.broker, args.database, args.concurrency, totals[mode]
                )
                for mode, workers in modes.items()
            }

            def new_result(s: Scenario, mode: str) -> Result:
                return DistributedResult(
                    s.name, s.carts, s.files, s.size, mode=mode, workers=modes[mode]
                )

            for result in base.measure(
                scenario, Path(workdir), runners, new_result, end_to_end=False
            ):
                assert isinstance(result, DistributedResult)
                finish(result, totals[result.mode], args.database)
                results.append(result)
    compare(results)
    print(table(results))
    for result in results:
        for note in result.notes[:5]:
            print(f"  {result.scenario} ({result.mode}): {note}")
    load_after = machine_load()
    print(f"load average before {load_before['loadavg']}, after {load_after['loadavg']}")
    document = {
        **base.describe(),
        "broker": args.broker,
        "database": args.database,
        "concurrency": args.concurrency,
        "load": {"before": load_before, "after": load_after},
        "results": [asdict(result) for result in results],
    }
    if args.json:
        args.json.write_text(json.dumps(document, indent=2))
    bad = sum(result.stuck + result.wrong for result in results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
