"""Header values built safely from text we do not control."""

from __future__ import annotations

import re
from urllib.parse import quote

from cartd.errors import RangeNotSatisfiable

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


_BYTE_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")


def _magnitude(digits: str) -> tuple[int, str]:
    """A key that orders decimal digit strings by value, without `int()`: Python refuses to
    convert more than 4,300 digits, and a client may send any number of them."""
    significant = digits.lstrip("0") or "0"
    return len(significant), significant


def _at_most(digits: str, ceiling: int) -> int:
    """`min(int(digits), ceiling)` for a digit string of any length."""
    length, significant = _magnitude(digits)
    if (length, significant) > _magnitude(str(ceiling)):
        return ceiling
    return int(significant)


def requested_range(value: str | None, size: int) -> tuple[int, int] | None:
    """The byte range a `Range` header asks of `size` bytes, as (first, end) with `end`
    exclusive; None to send everything.

    Only a single `bytes` range is honoured (RFC 9110 lets a server ignore the rest):
    a malformed header or several ranges get the whole representation, as from a
    server without ranges. Raises `RangeNotSatisfiable` for a range starting past the end.
    Numbers may have any number of digits: one past the end is only compared, never converted.
    """
    if value is None:
        return None
    match = _BYTE_RANGE.fullmatch(value.strip().replace(" ", ""))
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":  # the last N bytes
        suffix = _at_most(last, size)
        if _magnitude(last) == _magnitude("0"):
            raise RangeNotSatisfiable("an empty suffix range")
        return size - suffix, size
    if last != "" and _magnitude(last) < _magnitude(first):
        return None  # last before first: not a valid range, so not a range request
    start = _at_most(first, size)
    if start >= size:
        shown = first if len(first) <= 40 else f"{first[:20]}...({len(first)} digits)"
        raise RangeNotSatisfiable(f"the range starts at byte {shown} of {size}")
    return start, size if last == "" else _at_most(last, size - 1) + 1


def validator_holds(if_range: str | None, etag: str, last_modified: str | None) -> bool:
    """Whether a range may be sent under `If-Range`: it names the current tag exactly, or
    exactly the current date when there is one (RFC 9110 section 13.1.5); a weak tag
    never matches."""
    if if_range is None:
        return True
    value = if_range.strip()
    return value == etag or (last_modified is not None and value == last_modified)


_SECONDS = re.compile(r"[0-9]+")


def preferred_wait(values: list[str], ceiling: float) -> float | None:
    """The seconds a client that sent these `Prefer` headers (RFC 7240) will wait for its
    answer to begin, at most `ceiling`: `wait` alone means `ceiling`, `wait=N` means N.
    None when it does not ask to wait. Other preferences, their parameters, and a `wait`
    whose value is not a number of seconds are ignored, as the RFC asks."""
    for value in values:
        for preference in value.split(","):
            token, _, _parameters = preference.partition(";")
            name, equals, argument = token.partition("=")
            if name.strip().lower() != "wait":
                continue
            argument = argument.strip().strip('"')
            if not equals:
                return ceiling
            if _SECONDS.fullmatch(argument):
                return float(_at_most(argument, int(ceiling)))
    return None
