"""The `cartd` command. Each subcommand parses its options and calls one function."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cartd.errors import CartdError, ConfigError
from cartd.observability.logs import configure_logging

if TYPE_CHECKING:  # the server's modules are imported by the commands that use them, so
    # that `cartd get` and `--help` start without loading the database layer
    from cartd.config import Settings
    from cartd.service.admin import AdminService

log = logging.getLogger("cartd")

#: Seconds a stopping server lets responses under way finish before it cuts them: a
#: download whose client stalled would otherwise hold the process forever. A cut
#: download resumes with a Range request.
SHUTDOWN_GRACE = 5


#: prometheus-client's multiprocess switch (`cartd.observability.metrics.MULTIPROC_ENV`),
#: named here so that `cartd worker` can drop it before prometheus-client is imported.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _settings(args: argparse.Namespace) -> Settings:
    from cartd.config import load_settings

    return load_settings(args.config)


def _worker_settings(args: argparse.Namespace) -> Settings:
    """The settings, with `--metrics-port` over `cartd.metrics_port` when given."""
    from cartd.config import load_settings

    if args.metrics_port is None:
        return _settings(args)
    return load_settings(args.config, metrics_port=args.metrics_port)


def _server_settings(args: argparse.Namespace) -> Settings:
    """The settings with the CherryPy file (`--cpconfig`) and `-a`/`-p` over them, the
    log files open (`cartd.serving`)."""
    from cartd.serving import server_settings

    return server_settings(
        args.config,
        args.cpconfig,
        log_format=args.log_format,
        address=args.address,
        port=args.port,
    )


def serve(args: argparse.Namespace) -> int:
    if args.workers > 1:
        return _serve_processes(args)
    import uvicorn

    from cartd.api.app import create_app
    from cartd.runtime import build_runtime

    settings = _server_settings(args)
    app = create_app(settings, build_runtime(settings))
    uvicorn.run(
        app,
        host=settings.socket_host,
        port=settings.socket_port,
        log_level=args.log_level.lower(),
        log_config=None,  # uvicorn's lines go through cartd's formatter too
        timeout_graceful_shutdown=SHUTDOWN_GRACE,
    )
    return 0


def _serve_processes(args: argparse.Namespace) -> int:
    """N uvicorn worker processes of `cartd.asgi:app` behind one socket.

    Everything a worker builds is built here once first and closed (settings, the
    database within its connect attempts, the schema, which a SQLite volume gets
    upgraded here rather than by N processes at once), so a wrong setting exits 2 with
    one line instead of N workers failing. The workers read the same settings: `-c`,
    `--cpconfig` and the log options go to them through the environment.
    """
    import uvicorn

    from cartd.observability.metrics import multiprocess_folder
    from cartd.runtime import build_runtime

    settings = _server_settings(args)
    build_runtime(settings).close()
    if args.config:
        os.environ["CARTD_CONFIG"] = str(Path(args.config).expanduser().absolute())
    if args.cpconfig:
        os.environ["CARTD_CPCONFIG"] = str(Path(args.cpconfig).expanduser().absolute())
    os.environ["CARTD_LOG_LEVEL"] = args.log_level
    os.environ["CARTD_LOG_FORMAT"] = args.log_format
    # Set before the workers start (and so before they import prometheus-client): every
    # process writes its counters there, and /metrics of any of them adds them all up.
    with multiprocess_folder() as folder:
        log.info(
            "serving with %d worker processes; /metrics adds up their counters kept in %s",
            args.workers,
            folder,
        )
        uvicorn.run(
            "cartd.asgi:app",
            host=settings.socket_host,
            port=settings.socket_port,
            workers=args.workers,
            log_level=args.log_level.lower(),
            log_config=None,
            timeout_graceful_shutdown=SHUTDOWN_GRACE,
        )
    return 0


def worker(args: argparse.Namespace) -> int:
    if os.environ.pop(MULTIPROC_ENV, None):
        # Dropped before prometheus-client is imported (it reads it then): a worker is one
        # process serving its own counters; in the API's folder they would be counted twice.
        log.info("%s is for API processes: this worker serves its own metrics", MULTIPROC_ENV)
    from cartd.workers.celery_main import create_worker

    settings = _worker_settings(args)
    if not settings.broker_url:
        raise ConfigError("cartd worker needs a broker: set celery.broker_url (BROKER_URL)")
    app, host = create_worker(settings)
    host.parts()  # now, so a database that cannot be reached stops the start with its cause
    host.serve_metrics()  # and a metrics port that cannot be had
    app.conf.update(worker_hijack_root_logger=False, worker_redirect_stdouts=False)
    celery_worker = app.Worker(
        hostname=f"cartd-{os.getpid()}@{socket.gethostname()}",
        concurrency=args.concurrency,
        loglevel=args.log_level,
        # Mingle and gossip share revoked task ids and clock ticks among workers; cartd
        # revokes nothing (the database says what is done), so they would only add
        # broker traffic and a second to every start.
        without_mingle=True,
        without_gossip=True,
    )
    celery_worker.start()
    return int(celery_worker.exitcode or 0)


def dbsync(args: argparse.Namespace) -> int:
    with _admin(args, check_schema=False) as admin:
        revision, imported = admin.sync()
    print(f"database schema at revision {revision}")
    if imported:
        counts = Counter(item.outcome.value for item in imported)
        told = ", ".join(f"{count} {outcome}" for outcome, count in sorted(counts.items()))
        print(f"brought over {len(imported)} carts of Pacifica Cartd's tables: {told}")
        for item in imported:
            if item.note:
                print(f"  cart {item.uid} (its id {item.original_id}): {item.note}")
    return 0


@contextmanager
def _admin(args: argparse.Namespace, *, check_schema: bool = True) -> Iterator[AdminService]:
    from cartd.db.store import CartStore
    from cartd.runtime import bring_over_originals, ensure_schema, open_engine
    from cartd.service.admin import AdminService
    from cartd.storage import Volume

    settings = _settings(args)
    settings.volume_path.mkdir(parents=True, exist_ok=True)
    engine = open_engine(settings)
    volume = Volume(settings.volume_path)
    try:
        if check_schema:
            # As `serve` does: what a command shows or changes includes the original's carts.
            ensure_schema(engine)
            bring_over_originals(engine, volume)
        yield AdminService(engine, CartStore(engine), volume)
    finally:
        engine.dispose()


def dbchk(args: argparse.Namespace) -> int:
    with _admin(args, check_schema=False) as admin:
        state = admin.schema()
    print(f"database schema at revision {state.current or 'none'}; cartd needs {state.head}")
    if state.originals_pending:
        print(
            f"{state.originals_pending} carts of Pacifica Cartd's tables are not brought over"
            " yet: `cartd dbsync` brings them over"
        )
    if args.equal:
        return 0 if state.equal else 1
    return 0 if state.upgradable else 1


def fixit(args: argparse.Namespace) -> int:
    code = 0
    with _admin(args) as admin:
        for uid in args.cartid:
            try:
                fixed = admin.fixit(uid)
            except CartdError as exc:
                print(f"cartd: error: {exc.message}", file=sys.stderr)
                code = 1
                continue
            if not fixed:
                print(f"cart {uid}: neither in error nor being made, nothing to fix")
            for item in fixed:
                print(
                    f"cart {uid}: {item.files} files put back to be staged again"
                    f" (it was {item.cart.status.value})"
                )
    return code


#: Files not verified listed per stuck cart in the text output (all are in --json).
STUCK_FILES_SHOWN = 10


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for size, unit, smaller, small_unit in (
        (86400, "d", 3600, "h"),
        (3600, "h", 60, "m"),
        (60, "m", 1, "s"),
    ):
        if seconds >= size:
            return f"{seconds // size}{unit} {seconds % size // smaller:02d}{small_unit}"
    return f"{seconds}s"


def stuck(args: argparse.Namespace) -> int:
    from cartd.service.admin import parse_time_ago

    before = parse_time_ago(args.older_than)
    with _admin(args) as admin:
        found = admin.stuck(before)
    if args.json:
        document = [
            {
                "uid": item.cart.uid,
                "id": item.cart.id,
                "status": item.cart.status.value,
                "files_total": item.files_total,
                "files_verified": item.files_verified,
                "last_progress": item.last_progress.isoformat(),
                "holding": [
                    {
                        "id": file.archive_id,
                        "path": file.path,
                        "status": file.status.value,
                        "attempts": file.attempts,
                        "polls": file.polls,
                        "error": file.error,
                    }
                    for file in item.holding
                ],
            }
            for item in found
        ]
        print(json.dumps(document, indent=2))
        return 0
    since = f"{before.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
    if not found:
        print(f"no cart is stuck: every cart being made progressed since {since}")
        return 0
    moment = datetime.now(UTC)
    for item in found:
        print(
            f"{item.cart.uid}  {item.cart.status.value}"
            f"  files {item.files_verified}/{item.files_total} verified"
            f"  last progress {item.last_progress:%Y-%m-%d %H:%M:%S} UTC"
            f" ({_ago((moment - item.last_progress).total_seconds())} ago)"
        )
        if not item.holding:
            print("    every file verified; the cart was never finished")
        for file in item.holding[:STUCK_FILES_SHOWN]:
            note = f"  error: {file.error}" if file.error else ""
            print(
                f"    {file.archive_id}  {file.path}  {file.status.value}"
                f"  tries {file.attempts}  polls {file.polls}{note}"
            )
        if len(item.holding) > STUCK_FILES_SHOWN:
            print(f"    ... and {len(item.holding) - STUCK_FILES_SHOWN} more files not verified")
    print(
        f"{len(found)} carts with no progress since {since};"
        " `cartd fixit --cartid UID...` re-drives them"
    )
    return 0


def dump(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        carts = admin.dump()
    if args.json:
        document = [
            {
                "uid": cart.uid,
                "id": cart.id,
                "status": cart.status.value,
                "bundle": cart.bundle,
                "error": cart.error,
                "created": cart.created_at.isoformat(),
                "last_used": cart.last_used_at.isoformat(),
                "reserved_bytes": cart.reserved_bytes,
                "files": [
                    {
                        "id": file.archive_id,
                        "path": file.path,
                        "status": file.status.value,
                        "size": file.size,
                        "error": file.error,
                    }
                    for file in files
                ],
            }
            for cart, files in carts
        ]
        print(json.dumps(document, indent=2))
        return 0
    for cart, files in carts:
        staged = sum(1 for file in files if file.status.value == "staged")
        error = f"  error: {cart.error}" if cart.error else ""
        print(
            f"{cart.uid}  {cart.status.value}  files {staged}/{len(files)}"
            f"  last used {cart.last_used_at:%Y-%m-%d %H:%M:%S}{error}"
        )
        for file in files:
            note = f"  error: {file.error}" if file.error else ""
            size = "?" if file.size is None else str(file.size)
            print(f"    {file.archive_id}  {file.path}  {file.status.value}  {size}{note}")
    return 0


def purge(args: argparse.Namespace) -> int:
    from cartd.service.admin import parse_time_ago

    before = parse_time_ago(args.time_ago)
    with _admin(args) as admin:
        purged = admin.purge(before)
    for cart in purged:
        print(f"purged cart {cart.uid} (last used {cart.last_used_at:%Y-%m-%d %H:%M:%S})")
    print(f"{len(purged)} carts purged")
    return 0


def get(args: argparse.Namespace) -> int:
    from cartd.client.command import main as get_main

    return get_main(
        server=args.server,
        order=args.order,
        files=args.file or [],
        uid=args.uid,
        output=args.output,
        extract=args.extract,
        plain=args.plain,
        retries=args.retries,
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 0, not {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, not {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cartd", description="Data carts for scientific archives (Pacifica Cartd compatible)."
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="least severe log messages shown (default INFO)",
    )
    parser.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="text lines with key=value context, or one JSON object per line (default text)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "-c",
            "--config",
            metavar="CONFIG",
            help="INI file (default: $CARTD_CONFIG, else ~/.pacifica-cartd/config.ini"
            " if it exists)",
        )
        return sub

    serve_cmd = command("serve", "Run the HTTP API and, with no broker configured, the worker.")
    serve_cmd.add_argument(
        "-a", "--address", help="address to listen on (default: server.socket_host, 127.0.0.1)"
    )
    serve_cmd.add_argument(
        "-p", "--port", type=_port, help="port to listen on (default: server.socket_port, 8081)"
    )
    serve_cmd.add_argument(
        "--cpconfig",
        metavar="FILE",
        help="the original's CherryPy config file: its server.socket_host,"
        " server.socket_port, log.access_file and log.error_file are used, other keys are"
        " ignored with a warning (default: $CARTD_CPCONFIG, else"
        " ~/.pacifica-cartd/cpconfig.ini if it exists)",
    )
    serve_cmd.add_argument(
        "-w",
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help="API processes sharing the port (default 1); with no broker, one of them at a"
        " time runs the staging steps",
    )
    serve_cmd.set_defaults(handler=serve)

    work = command(
        "worker",
        "Run a Celery worker that takes the staging steps the API processes send"
        " (celery.broker_url must be set); it also re-sends steps whose message was lost.",
    )
    work.add_argument(
        "--concurrency",
        type=_positive,
        metavar="N",
        help="steps run at once, each in a thread (default: cartd.stage_workers)",
    )
    work.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help="serve this worker's Prometheus metrics on this port (default:"
        " cartd.metrics_port; 0: none), at cartd.metrics_address",
    )
    work.set_defaults(handler=worker)

    command(
        "dbsync",
        "Create or upgrade the database schema, then bring over the carts of the original"
        " Pacifica Cartd's tables in that database (once; its tables are left unchanged).",
    ).set_defaults(handler=dbsync)

    check = command(
        "dbchk",
        "Check the database schema: exit 0 when this cartd can use it after `dbsync`"
        " (with --equal: only when it is already current and no cart of the original"
        " Pacifica Cartd is left to bring over), 1 otherwise.",
    )
    check.add_argument("--equal", action="store_true", help="require the schema to be current")
    check.set_defaults(handler=dbchk)

    fix = command(
        "fixit",
        "Re-drive carts in error or still being made: every file not verified yet is put"
        " back to be staged now (failed files with their tries and error forgotten), and a"
        " cart in error goes back to staging; a running cartd picks them up within seconds.",
    )
    fix.add_argument("--cartid", nargs="+", required=True, metavar="UID", help="cart uids")
    fix.set_defaults(handler=fixit)

    late = command(
        "stuck",
        "List carts still being made (waiting, staging, bundling) that have made no progress"
        " for a while: no step has recorded anything about the cart or any of its files"
        " since. A file on tape is asked about at least every cartd.poll_max seconds, so"
        " a cart waiting on tape is listed only for a shorter duration.",
    )
    late.add_argument(
        "--older-than",
        default="1 hour",
        metavar="DURATION",
        help="no progress for that long: e.g. '30 minutes', '2 hours' (default 1 hour),"
        " or since an ISO date",
    )
    late.add_argument("--json", action="store_true", help="as JSON")
    late.set_defaults(handler=stuck)

    show = command("dump", "List the live carts with their files and statuses.")
    show.add_argument("--json", action="store_true", help="as JSON")
    show.set_defaults(handler=dump)

    old = command(
        "purge",
        "Delete finished carts (ready or in error) not used since a time; carts still"
        " being made are kept.",
    )
    old.add_argument(
        "--time-ago",
        required=True,
        metavar="WHEN",
        help="e.g. '7 days ago', '12 hours ago', or an ISO date such as 2026-01-31T12:00",
    )
    old.set_defaults(handler=purge)
    _add_get(commands)
    return parser


GET_HELP = (
    "Order a cart from a cart server (cartd, or the original Pacifica Cartd), show its"
    " progress, download its tar into FILE.part, verify every member against the order's"
    " checksums, then rename it to FILE and, with --extract, unpack it. Run again after an"
    " interruption, the same command resumes FILE.part."
)


def _add_get(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from cartd.client.errors import EXIT_CODES

    fetch = commands.add_parser(
        "get",
        help="Order a cart, follow it, download and verify its tar.",
        description=textwrap.fill(GET_HELP, 88),
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fetch.add_argument(
        "order",
        nargs="?",
        metavar="ORDER.json",
        help='the order, a JSON file in the POST body\'s format ({"fileids": [{"id",'
        ' "path", "hashtype", "hashsum"}, ...], "bundle": false}); - reads it'
        " from standard input",
    )
    fetch.add_argument(
        "--server", required=True, metavar="URL", help="the cart server, e.g. http://127.0.0.1:8081"
    )
    fetch.add_argument(
        "--file",
        nargs=4,
        action="append",
        metavar=("ID", "PATH", "HASHTYPE", "HASHSUM"),
        help="order this file instead of reading ORDER.json (repeat for more files)",
    )
    fetch.add_argument(
        "--uid",
        help="the cart's name (default: a new UUID, or the one of the part this command"
        " left in the current folder)",
    )
    fetch.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="where the tar goes (default <uid>.tar in the current folder); its name,"
        " without .tar, is the tar's top folder (cartd names a bundled cart's after the uid)",
    )
    fetch.add_argument(
        "--extract",
        metavar="DIR",
        help="unpack the verified tar into DIR, each file at DIR/<path> as the order put"
        " it (the tar's top folder left out), safely: nothing lands outside DIR",
    )
    fetch.add_argument(
        "--plain",
        action="store_true",
        help="plain lines instead of bars, also on a terminal (the default elsewhere)",
    )
    fetch.add_argument(
        "--retries",
        type=_count,
        default=4,
        metavar="N",
        help="times a download that broke off is asked again from where it broke, with"
        " growing pauses, before giving up (default 4)",
    )
    fetch.set_defaults(handler=get)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    try:
        code: int = args.handler(args)
    except CartdError as exc:
        print(f"cartd: error: {exc.message}", file=sys.stderr)
        return 2
    return code


def build_legacy_parser() -> argparse.ArgumentParser:
    """The options of the original's `pacifica-cartd`, each forwarded to `cartd serve`."""
    parser = argparse.ArgumentParser(
        prog="pacifica-cartd", description="Run cartd (the original's command line)."
    )
    parser.add_argument("-c", "--config", metavar="CONFIG", help="INI file")
    parser.add_argument("--cpconfig", metavar="CONFIG", help="CherryPy config file")
    parser.add_argument("-p", "--port", help="port to listen on")
    parser.add_argument("-a", "--address", help="address to listen on")
    return parser


def legacy_server(argv: Sequence[str] | None = None) -> int:
    """`pacifica-cartd`: the original's server command and flags, so service units keep working."""
    parser = build_legacy_parser()
    args, _ = parser.parse_known_args(argv)
    forwarded = ["serve"]
    for flag, value in (
        ("-c", args.config),
        ("--cpconfig", args.cpconfig),
        ("-p", args.port),
        ("-a", args.address),
    ):
        if value:
            forwarded += [flag, value]
    return main(forwarded)


def legacy_admin(argv: Sequence[str] | None = None) -> int:
    """`pacifica-cartd-cmd`: the original's admin commands (dbsync, dbchk, fixit, dump, purge)."""
    return main(argv)


if __name__ == "__main__":
    sys.exit(main())
