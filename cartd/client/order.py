"""The order `cartd get` sends: a JSON file in the POST body's format, or files named on
the command line. It is checked with the server's own rules before it is sent, so a
mistake is told at once, without a cart made on the server."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cartd.client.errors import OrderError
from cartd.errors import InvalidRequest
from cartd.folders import member_path
from cartd.schemas import FileOrder, parse_cart_order

#: `ORDER` on the command line that means "read it from standard input".
STDIN = "-"


@dataclass(frozen=True)
class LoadedOrder:
    """An order as it is sent (`body`, unchanged, so keys cartd get does not know about
    reach the server) and the files it names."""

    body: bytes
    files: tuple[FileOrder, ...]

    @property
    def digest(self) -> str:
        """Names this order in what is kept beside FILE.part: a part is resumed only for
        the same order."""
        return hashlib.sha256(self.body).hexdigest()

    def members(self) -> Mapping[str, FileOrder]:
        """Each file by its path below the tar's top folder, as the server writes it."""
        return {member_path(file.path): file for file in self.files}


def load_order(
    source: str | None, file_args: Sequence[Sequence[str]], stdin: BinaryIO
) -> LoadedOrder:
    """The order from `source` (a file, or `-` for `stdin`) or from `--file ID PATH
    HASHTYPE HASHSUM` arguments (exactly one of the two); raises `OrderError`."""
    if source is not None and file_args:
        raise OrderError("give either an ORDER file or --file arguments, not both")
    if source is None and not file_args:
        raise OrderError("give an ORDER file (- for standard input) or --file arguments")
    if source is None:
        fileids = [
            {"id": file_id, "path": path, "hashtype": hashtype, "hashsum": hashsum}
            for file_id, path, hashtype, hashsum in file_args
        ]
        return _checked(json.dumps({"fileids": fileids}).encode(), "--file")
    if source == STDIN:
        return _checked(stdin.read(), "the order on standard input")
    try:
        body = Path(source).read_bytes()
    except OSError as exc:
        raise OrderError(f"cannot read the order {source}: {exc.strerror}") from None
    return _checked(body, source)


def _checked(body: bytes, where: str) -> LoadedOrder:
    """The order checked by the server's rules, but for its `callback`: which hosts a
    callback may name is the server's configuration, so the server alone checks it."""
    checked = body
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        pass  # parse_cart_order says what is wrong
    else:
        if isinstance(document, dict) and "callback" in document:
            del document["callback"]
            checked = json.dumps(document).encode()
    try:
        order = parse_cart_order(checked)
    except InvalidRequest as exc:
        raise OrderError(f"{where}: {exc.message}") from None
    return LoadedOrder(body, order.files)
