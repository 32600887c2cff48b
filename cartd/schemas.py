"""What a client may send, validated before anything is stored.

Validation raises `InvalidRequest` with a message that names the offending
field, so a bad order gets a clear 400 and changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from cartd.errors import InvalidRequest

_UID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_HEX = re.compile(r"[0-9a-fA-F]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

#: Algorithms whose hex digest has a fixed length (the SHAKEs need one given, so are left out).
HASH_ALGORITHMS = frozenset(
    name for name in hashlib.algorithms_available if not name.startswith("shake")
)


def validate_uid(uid: str) -> str:
    if not _UID.fullmatch(uid) or uid in {".", ".."}:
        raise InvalidRequest(
            f"invalid cart uid {uid[:80]!r}: use 1 to 64 characters from A-Z a-z 0-9 . _ -"
        )
    return uid


def normalize_path(path: str) -> str:
    """The path inside the bundle: relative, no `..`, no empty or `.` segments."""
    if _CONTROL.search(path):
        raise ValueError("must not contain control characters")
    parts = [part for part in path.split("/") if part not in {"", "."}]
    if not parts:
        raise ValueError("is empty")
    if ".." in parts:
        raise ValueError("must not contain '..' segments")
    return "/".join(parts)


def validate_download_name(name: str | None, default: str) -> str:
    """The `filename` query parameter: one safe file name."""
    if name is None or name == "":
        return default
    if "/" in name or _CONTROL.search(name) or len(name.encode("utf-8")) > 255:
        raise InvalidRequest(
            "invalid filename: it must be one name of at most 255 bytes,"
            " without '/' or control characters"
        )
    if name in {".", ".."}:
        raise InvalidRequest("invalid filename: '.' and '..' are not file names")
    return name


@dataclass(frozen=True)
class FileOrder:
    """One wanted file: archive id, place in the bundle, expected checksum."""

    archive_id: str
    path: str
    hashtype: str
    hashsum: str


@dataclass(frozen=True)
class CartOrder:
    files: tuple[FileOrder, ...]
    bundle: bool | None


def _file_order(index: int, entry: Any) -> FileOrder:
    where = f"fileids[{index}]"
    if not isinstance(entry, dict):
        raise InvalidRequest(f"{where} must be an object with id, path, hashtype and hashsum")
    missing = [key for key in ("id", "path", "hashtype", "hashsum") if key not in entry]
    if missing:
        raise InvalidRequest(f"{where} lacks {', '.join(missing)}")
    file_id = entry["id"]
    if isinstance(file_id, bool) or not isinstance(file_id, str | int):
        raise InvalidRequest(f"{where}.id must be a string or an integer")
    file_id = str(file_id)
    if not file_id or _CONTROL.search(file_id) or len(file_id) > 1024:
        raise InvalidRequest(f"{where}.id must be 1 to 1024 printable characters")
    if not isinstance(entry["path"], str):
        raise InvalidRequest(f"{where}.path must be a string")
    try:
        path = normalize_path(entry["path"])
    except ValueError as exc:
        raise InvalidRequest(f"{where}.path {entry['path'][:200]!r} {exc}") from None
    hashtype = entry["hashtype"]
    if not isinstance(hashtype, str) or hashtype.lower() not in HASH_ALGORITHMS:
        raise InvalidRequest(
            f"{where}.hashtype {str(hashtype)[:40]!r} is not a known hash algorithm"
            f" (known: {', '.join(sorted(HASH_ALGORITHMS))})"
        )
    hashtype = hashtype.lower()
    hashsum = entry["hashsum"]
    if not isinstance(hashsum, str) or not _HEX.fullmatch(hashsum):
        raise InvalidRequest(f"{where}.hashsum must be a hex digest string")
    expected = hashlib.new(hashtype).digest_size * 2
    if hashsum and len(hashsum) != expected:
        raise InvalidRequest(
            f"{where}.hashsum has {len(hashsum)} hex digits; {hashtype} has {expected}"
        )
    return FileOrder(file_id, path, hashtype, hashsum.lower())


def _check_layout(files: list[FileOrder]) -> None:
    """No two files at one place, and no file where another needs a folder."""
    seen: dict[str, int] = {}
    for index, order in enumerate(files):
        if order.path in seen:
            raise InvalidRequest(
                f"fileids[{index}].path {order.path!r} is also the path of"
                f" fileids[{seen[order.path]}]"
            )
        seen[order.path] = index
    for index, order in enumerate(files):
        parts = order.path.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if folder in seen:
                raise InvalidRequest(
                    f"fileids[{seen[folder]}].path {folder!r} is a folder of"
                    f" fileids[{index}].path {order.path!r}"
                )


def parse_cart_order(body: bytes) -> CartOrder:
    """Parse and check a POST body; raise `InvalidRequest` saying what is wrong."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("the request body is not valid JSON") from None
    except RecursionError:
        raise InvalidRequest("the request body is nested too deeply") from None
    if not isinstance(document, dict):
        raise InvalidRequest("the request body must be a JSON object with a 'fileids' list")
    if "fileids" not in document:
        raise InvalidRequest("the request body lacks 'fileids'")
    entries = document["fileids"]
    if not isinstance(entries, list) or not entries:
        raise InvalidRequest("'fileids' must be a non-empty list")
    bundle = document.get("bundle")
    if bundle is not None and not isinstance(bundle, bool):
        raise InvalidRequest("'bundle' must be true or false")
    files = [_file_order(index, entry) for index, entry in enumerate(entries)]
    _check_layout(files)
    return CartOrder(tuple(files), bundle)
