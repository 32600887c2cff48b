"""The live page of a cart (`GET /<uid>/view`): one HTML file with its style and script
inline (`static/view.html`), so that it needs no build step and loads nothing from
anywhere but this server, and a Content-Security-Policy that lets that style and script
run by their hashes and nothing else."""

from __future__ import annotations

import base64
import hashlib
import html
import re
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib.resources import files

_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)
_SLOT = re.compile(r"\{\{(\w+)\}\}")


class PageKind(StrEnum):
    """What the page shows: a cart followed live, no cart of that uid, or not a uid."""

    LIVE = "live"
    MISSING = "missing"
    INVALID = "invalid"


@dataclass(frozen=True)
class Template:
    text: str
    policy: str


def _hash(source: str) -> str:
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


@cache
def template() -> Template:
    """The page and its policy, read once from the package."""
    text = (files("cartd.api") / "static" / "view.html").read_text(encoding="utf-8")
    inline: dict[str, list[str]] = {"script": [], "style": []}
    for kind, source in _INLINE.findall(text):
        assert not _SLOT.search(source), "no slot inside a script or style: its hash is fixed"
        inline[kind].append(_hash(source))
    policy = "; ".join(
        [
            "default-src 'none'",
            "script-src " + " ".join(inline["script"]),
            "style-src " + " ".join(inline["style"]),
            "connect-src 'self'",
            "img-src data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    return Template(text, policy)


def render(uid: str, kind: PageKind) -> str:
    """The page for `uid`; every value put in it is escaped (a bad uid is not shown)."""
    if kind is PageKind.INVALID:
        title = heading = "Not a cart"
        status = "That is not the name of a cart: 1 to 64 of A-Z a-z 0-9 . _ -, not . or .."
        uid = ""
    elif kind is PageKind.MISSING:
        title, heading = f"Cart {uid}", uid
        status = f"No cart named {uid}: it was never ordered, or it was deleted."
    else:
        title, heading, status = f"Cart {uid}", uid, "Connecting…"
    values = {"title": title, "heading": heading, "status": status, "uid": uid, "page": kind}
    return _SLOT.sub(lambda slot: html.escape(values[slot.group(1)]), template().text)


def headers() -> dict[str, str]:
    """The page's own headers: its policy, and no sniffing, framing or caching."""
    return {
        "Content-Security-Policy": template().policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }
