"""The `cartd` command. Each subcommand parses its options and calls one function."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from cartd.config import Settings, load_settings
from cartd.errors import CartdError
from cartd.observability.logs import configure_logging

log = logging.getLogger("cartd")


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from cartd.api.app import create_app
    from cartd.runtime import build_runtime

    settings = _settings(args)
    app = create_app(settings, build_runtime(settings))
    uvicorn.run(
        app,
        host=args.address,
        port=args.port,
        log_level=args.log_level.lower(),
        log_config=None,  # uvicorn's lines go through cartd's formatter too
    )
    return 0


def dbsync(args: argparse.Namespace) -> int:
    from cartd.db import migrate
    from cartd.runtime import open_engine

    settings = _settings(args)
    settings.volume_path.mkdir(parents=True, exist_ok=True)
    engine = open_engine(settings)
    try:
        migrate.upgrade(engine)
        print(f"database schema at revision {migrate.current_revision(engine)}")
    finally:
        engine.dispose()
    return 0


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
    serve_cmd.add_argument("-a", "--address", default="127.0.0.1", help="default 127.0.0.1")
    serve_cmd.add_argument("-p", "--port", type=int, default=8081, help="default 8081")
    serve_cmd.set_defaults(handler=serve)

    command("dbsync", "Create or upgrade the database schema.").set_defaults(handler=dbsync)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    try:
        code: int = args.handler(args)
    except CartdError as exc:
        print(f"cartd: error: {exc.message}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
