"""`cartd get` as the command line gives it: the order read, the display chosen, the
outcome an exit code."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from cartd.client.errors import GetError
from cartd.client.get import GetRequest, run
from cartd.client.order import load_order
from cartd.client.progress import choose_display
from cartd.client.transfer import RetryPolicy


def main(
    *,
    server: str,
    order: str | None,
    files: Sequence[Sequence[str]],
    uid: str | None,
    output: str | None,
    extract: str | None,
    plain: bool,
    retries: int,
) -> int:
    try:
        loaded = load_order(order, files, sys.stdin.buffer)
    except GetError as exc:
        print(f"cartd get: {exc.message}", file=sys.stderr)
        return exc.exit_code
    request = GetRequest(
        server=server.rstrip("/"),
        order=loaded,
        uid=uid,
        output=Path(output) if output else None,
        extract=Path(extract) if extract else None,
        policy=RetryPolicy(tries=retries),
    )
    return run(request, choose_display(plain))
