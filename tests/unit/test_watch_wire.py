"""The wire of watching a cart: server-sent events as the HTML standard reads them, ids that
only grow, and the live page: escaped, self-contained, allowed by its policy only its own
style and script, and legible in both colour schemes."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime

import pytest

from cartd.api import page
from cartd.api.events import CartEvent, EventIds, GoneEvent, encode, event_data
from cartd.api.headers import preferred_wait
from cartd.records import Cart, Progress
from cartd.service.changes import Change, Event, EventName, Holdup, Reason, Snapshot
from cartd.status import CartStatus, FileStatus
from tests.support.watching import parse

MOMENT = datetime(2026, 11, 30, tzinfo=UTC)


def test_an_event_is_its_fields_on_lines_and_its_json_on_one() -> None:
    cart = Cart(7, "u1", CartStatus.BUNDLING, False, None, MOMENT, MOMENT, MOMENT, None)
    tricky = Holdup("x\ny", "a\r\nb/\u2028.bin", FileStatus.ERROR, Reason.FAILED, "bad\nthing", 6)
    snapshot = Snapshot(cart, Progress(2, 1, 30, 10, 2), (tricky,))
    data = event_data("u1", Event(EventName.CHANGE, snapshot, (Change.PHASE, Change.HOLDING)))
    assert data == {
        "uid": "u1",
        "status": "staging",
        "phase": "bundling",
        "error": None,
        "files_total": 2,
        "files_staged": 1,
        "files_sized": 2,
        "bytes_total": 30,
        "bytes_staged": 10,
        "holding": [
            {
                "id": "x\ny",
                "path": "a\r\nb/\u2028.bin",
                "status": "error",
                "reason": "failed",
                "error": "bad\nthing",
                "attempts": 6,
            }
        ],
        "changed": ["phase", "holding"],
    }
    assert CartEvent.model_validate(data).model_dump() == data, "as the description says"
    first = encode("change", data, 12, 3000).decode()
    assert first.startswith("retry: 3000\nid: 12\nevent: change\ndata: {")
    assert first.endswith("}\n\n")
    assert first.count("\n") == 5
    later = encode("change", data, 13, None).decode()
    assert later.startswith("id: 13\nevent: change\ndata: ")
    # Read back as a browser reads it: the same event, line breaks in text and all.
    (read,) = parse(iter(first.split("\n")))
    assert (read.name, read.id, read.retry, read.data) == ("change", "12", 3000, data)


def test_the_event_of_a_cart_gone_says_only_so() -> None:
    data = event_data("u2", Event(EventName.DELETED, None, (Change.CART,)))
    assert data == {
        "uid": "u2",
        "message": "The cart does not exist or has already been deleted",
        "changed": ["cart"],
    }
    assert GoneEvent.model_validate(data).model_dump() == data


def test_event_ids_only_grow_and_pass_the_last_a_client_had() -> None:
    clock = iter([1.0, 1.0, 0.5, 2.0]).__next__
    ids = EventIds(None, clock)
    assert [ids.next() for _ in range(4)] == [1000, 1001, 1002, 2000]
    ahead = EventIds("99999999999999", lambda: 1.0)
    assert ahead.next() == 100000000000000
    for nonsense in ("", "abc", "-5", "1.5", "\u0662\u0663", "9" * 20):
        assert EventIds(nonsense, lambda: 1.0).next() == 1000


@pytest.mark.parametrize(
    ("values", "expected"),
    [([], None), (["wait"], 50.0), (["wait=3"], 3.0), (["wait=51"], 50.0), (["wait=x"], None)],
)
def test_a_head_waits_at_most_the_configured_bound(
    values: list[str], expected: float | None
) -> None:
    assert preferred_wait(values, 50) == expected


def _inline(text: str, kind: str) -> list[str]:
    return re.findall(rf"<{kind}>(.*?)</{kind}>", text, re.DOTALL)


def _digest(source: str) -> str:
    return base64.b64encode(hashlib.sha256(source.encode()).digest()).decode()


def test_the_page_is_allowed_its_own_script_and_style_and_nothing_else() -> None:
    text = page.render("cart-1", page.PageKind.LIVE)
    policy = dict(
        part.split(" ", 1) for part in page.headers()["Content-Security-Policy"].split("; ")
    )
    assert policy["default-src"] == "'none'"
    assert policy["connect-src"] == "'self'"
    (script,) = _inline(text, "script")
    (style,) = _inline(text, "style")
    assert policy["script-src"] == f"'sha256-{_digest(script)}'"
    assert policy["style-src"] == f"'sha256-{_digest(style)}'"
    # Self-contained: no address of anywhere else, no inline handler or style attribute.
    assert not re.search(r"(src|href)=\"(?!data:|#)", text)
    assert not re.search(r"https?:|(['\"(])//", text)
    assert "url(" not in style
    assert "@import" not in style
    assert not re.search(r"\son\w+=", text)
    assert " style=" not in text
    assert "innerHTML" not in script
    assert "insertAdjacentHTML" not in script
    assert 'data-uid="cart-1"' in text
    assert 'data-page="live"' in text


def test_what_the_page_shows_is_escaped() -> None:
    # A uid never holds markup (it is checked first); escaped all the same.
    text = page.render('a"<b>', page.PageKind.MISSING)
    assert "a&quot;&lt;b&gt;" in text
    assert "<b>" not in text.split("<body", 1)[1].split("<script>")[0]
    invalid = page.render("<i>evil</i>", page.PageKind.INVALID)
    assert "evil" not in invalid
    assert 'data-page="invalid"' in invalid


def _colours(block: str) -> dict[str, str]:
    return dict(re.findall(r"--([\w-]+):\s*(#[0-9a-f]{6});", block))


def _luminance(colour: str) -> float:
    def channel(value: int) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def _contrast(one: str, two: str) -> float:
    light, dark = sorted((_luminance(one), _luminance(two)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


#: Every text colour of the page on every background it is shown on.
PAIRS = [
    ("fg", "bg"),
    ("fg", "panel"),
    ("muted", "bg"),
    ("muted", "panel"),
    ("accent", "bg"),
    ("on-accent", "accent"),
    ("ok", "panel"),
    ("bad", "panel"),
    ("warn", "bg"),
]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_text_is_legible_in_both_colour_schemes(scheme: str) -> None:
    (style,) = _inline(page.template().text, "style")
    light = _colours(style.split("@media", 1)[0])
    dark = _colours(style.split("prefers-color-scheme: dark", 1)[1].split("}", 2)[0])
    colours = light if scheme == "light" else dark
    for text, background in PAIRS:
        ratio = _contrast(colours[text], colours[background])
        assert ratio >= 4.5, f"{scheme}: --{text} on --{background} is {ratio:.2f}:1"
