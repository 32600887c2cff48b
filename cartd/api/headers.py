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
