"""Header values built safely from text we do not control."""

from __future__ import annotations

import re
from urllib.parse import quote

_TOKEN = re.compile(r"[A-Za-z0-9!#$&+.^_`|~-]+")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]+")


def header_text(text: str, limit: int = 1024) -> str:
    """One line of Latin-1, as HTTP headers need; anything else becomes '?'."""
    flat = _UNSAFE.sub(" ", text)[:limit]
    return flat.encode("latin-1", "replace").decode("latin-1")


def content_disposition(filename: str) -> str:
    """`attachment; filename=NAME` as the original sends it, quoted per RFC 6266 when needed."""
    if _TOKEN.fullmatch(filename):
        return f"attachment; filename={filename}"
    fallback = filename.encode("ascii", "replace").decode("ascii").replace("\\", "\\\\")
    fallback = fallback.replace('"', '\\"')
    if filename.isascii():
        return f'attachment; filename="{fallback}"'
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


_BYTE_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class RangeNotSatisfiable(Exception):
    """The one range asked for lies wholly past the end of the representation."""


def requested_range(value: str | None, size: int) -> tuple[int, int] | None:
    """The byte range a `Range` header asks of `size` bytes, as (first, end) with `end`
    exclusive; None to send everything.

    Only a single `bytes` range is honoured (RFC 9110 lets a server ignore the rest):
    a malformed header or several ranges get the whole representation, as from a
    server without ranges. Raises `RangeNotSatisfiable` for a range starting past the end.
    """
    if value is None:
        return None
    match = _BYTE_RANGE.fullmatch(value.strip().replace(" ", ""))
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":  # the last N bytes
        suffix = int(last)
        if suffix == 0:
            raise RangeNotSatisfiable("an empty suffix range")
        return max(0, size - suffix), size
    start = int(first)
    if last != "" and int(last) < start:
        return None  # last before first: not a valid range, so not a range request
    if start >= size:
        raise RangeNotSatisfiable(f"the range starts at byte {start} of {size}")
    return start, size if last == "" else min(int(last) + 1, size)


def validator_holds(if_range: str | None, etag: str, last_modified: str) -> bool:
    """Whether a range may be sent under `If-Range`: it names the current tag exactly, or
    exactly the current date (RFC 9110 section 13.1.5); a weak tag never matches."""
    if if_range is None:
        return True
    value = if_range.strip()
    return value in (etag, last_modified)
