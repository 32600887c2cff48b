"""Callbacks, piece by piece: the signature, where a callback may point, what an answer
means and when to try again, the event's bytes, the outbox on a real SQLite database
(written with the status change, one sender per try), and one process's delivery to a
real receiver on a loopback port."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from cartd.callbacks import Answer, signature
from cartd.callbacks.http import HttpSender
from cartd.config import load_settings, parse_callback_host
from cartd.db.outbox import Outbox
from cartd.db.space import SpaceLedger
from cartd.db.store import CartStore, events
from cartd.errors import ConfigError, InvalidRequest
from cartd.observability.metrics import Metrics
from cartd.records import CallbackEvent
from cartd.schemas import CallbackRule, FileOrder, parse_cart_order
from cartd.service.backoff import Backoff
from cartd.service.callbacks import (
    CallbackDelivery,
    CallbackPolicy,
    Verdict,
    event_body,
    verdict,
)
from cartd.service.watch import claim_token
from cartd.space_plan import NO_SPACE
from cartd.status import CartStatus
from tests.support.receiver import Receiver

SECRET = "0123456789abcdef-secret"

# -- the signature -------------------------------------------------------------------------


def test_the_signature_is_the_hex_hmac_sha256_of_the_body() -> None:
    # RFC 4231, test case 2.
    assert signature(b"Jefe", b"what do ya want for nothing?") == (
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )
    assert signature(b"k", b"{}") != signature(b"k", b"{} ")


# -- where a callback may point ------------------------------------------------------------


RULE = CallbackRule((("hooks.example.org", 443), ("127.0.0.1", None), ("[::1]", 8080)))


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.org/cartd",
        "https://hooks.example.org:443/cartd?token=a%2Fb&x=1#frag",
        "http://hooks.example.org:443/",
        "https://HOOKS.Example.ORG",
        "http://127.0.0.1/x",
        "http://127.0.0.1:1/x",
        "https://127.0.0.1:65535",
        "http://[::1]:8080/a/b@c",
        "http://127.0.0.1/" + "x" * (2048 - 17),
    ],
)
def test_urls_to_an_allowed_host_are_allowed(url: str) -> None:
    assert RULE.allows(url)
    assert RULE.check(url) == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://hooks.example.org/", "names 'hooks.example.org'"),  # only :443 is allowed
        ("https://hooks.example.org:8443/", "names 'hooks.example.org:8443'"),
        ("https://hooks.example.org.evil.net/", "names 'hooks.example.org.evil.net'"),
        ("https://evil.net/hooks.example.org", "names 'evil.net'"),
        ("http://127.0.0.1:0/", "names '127.0.0.1:0'"),
        ("http://127.0.0.1:65536/", "names '127.0.0.1:65536'"),
        ("http://127.0.0.1:080/", "names '127.0.0.1:080'"),
        ("http://[::1]/", "names '[::1]'"),
        ("http://[0:0::1]:8080/", "names '[0:0::1]:8080'"),
        ("http://127.0.0.1@evil.net/", "user name or password"),
        ("https://user:pw@hooks.example.org/", "user name or password"),
        ("HTTP://127.0.0.1/", "http:// or https://"),
        ("ftp://127.0.0.1/", "http:// or https://"),
        ("//127.0.0.1/", "http:// or https://"),
        ("", "http:// or https://"),
        ("http://127.0.0.1/a b", "only the URL characters"),
        ("http://127.0.0.1/a\\b", "only the URL characters"),
        ("http://127.0.0.1/caf\u00e9", "only the URL characters"),
        ("http://127.0.0.1/%zz", "only the URL characters"),
        ("http://127.0.0.1/\n", "only the URL characters"),
        ("http://127.0.0.1/" + "x" * (2049 - 17), "over 2048 characters"),
    ],
)
def test_other_urls_are_refused_saying_why(url: str, why: str) -> None:
    assert not RULE.allows(url)
    with pytest.raises(InvalidRequest, match=r"^'callback' ") as refused:
        RULE.check(url)
    assert why in refused.value.message


def test_without_hosts_no_callback_is_accepted() -> None:
    off = CallbackRule()
    assert not off.enabled
    assert not off.allows("http://127.0.0.1/")
    with pytest.raises(InvalidRequest, match="callbacks are not enabled on this server"):
        off.check("http://127.0.0.1/")
    assert off.json_schema()["type"] == "null"


def test_the_description_is_the_rule() -> None:
    schema = RULE.json_schema()
    text, null = schema["anyOf"]
    assert null == {"type": "null"}
    assert text == {"type": "string", "maxLength": 2048, "pattern": RULE.pattern}
    assert "hooks.example.org:443, 127.0.0.1, [::1]:8080" in schema["description"]


def _order(**extra: object) -> bytes:
    entry = {"id": "a", "path": "a", "hashtype": "md5", "hashsum": ""}
    return json.dumps({"fileids": [entry], **extra}).encode()


def test_an_order_carries_its_callback_or_none() -> None:
    assert parse_cart_order(_order(callback="http://127.0.0.1/h"), RULE).callback == (
        "http://127.0.0.1/h"
    )
    assert parse_cart_order(_order(callback=None), RULE).callback is None
    assert parse_cart_order(_order(), RULE).callback is None
    assert parse_cart_order(_order(callback=None)).callback is None
    for bad, says in [
        ("http://127.0.0.2/h", "'callback' names '127.0.0.2'"),
        (["http://127.0.0.1/h"], "'callback' must be a URL (a string) or null"),
    ]:
        with pytest.raises(InvalidRequest, match=re.escape(says)):
            parse_cart_order(_order(callback=bad), RULE)
    with pytest.raises(InvalidRequest, match="not enabled"):
        parse_cart_order(_order(callback="http://127.0.0.1/h"))


@pytest.mark.parametrize(
    ("text", "host"),
    [
        ("Hooks.Example.org", ("hooks.example.org", None)),
        (" 127.0.0.1:8080 ", ("127.0.0.1", 8080)),
        ("localhost:443", ("localhost", 443)),
        ("[0:0::1]", ("[::1]", None)),
        ("[::1]:1", ("[::1]", 1)),
    ],
)
def test_a_callback_host_is_host_and_port(text: str, host: tuple[str, int | None]) -> None:
    assert parse_callback_host(text) == host


@pytest.mark.parametrize(
    "text", ["a b", "-a.org", "a..org", "a:", "a:0", "a:65536", "a:x", "[::1", "[x]", "[::1]8"]
)
def test_a_bad_callback_host_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"host|port|IPv6"):
        parse_callback_host(text)


def test_hosts_without_a_secret_do_not_start() -> None:
    with pytest.raises(ConfigError, match=r"cartd.callback_secret \(CARTD_CALLBACK_SECRET\)"):
        load_settings(None, environ={"CARTD_CALLBACK_HOSTS": "127.0.0.1"})
    with pytest.raises(ConfigError, match="at least 16 characters"):
        load_settings(None, environ={"CARTD_CALLBACK_HOSTS": "a", "CARTD_CALLBACK_SECRET": "short"})
    with pytest.raises(ConfigError, match=r"cartd.callback_hosts .*'a:0'"):
        load_settings(
            None, environ={"CARTD_CALLBACK_HOSTS": "a:0", "CARTD_CALLBACK_SECRET": SECRET}
        )
    settings = load_settings(
        None, environ={"CARTD_CALLBACK_HOSTS": "a, b:9", "CARTD_CALLBACK_SECRET": SECRET}
    )
    assert settings.callback_hosts == (("a", None), ("b", 9))
    assert SECRET not in repr(settings)
    off = load_settings(None, environ={})
    assert (off.callback_hosts, off.callback_secret) == ((), None)


# -- what an answer means, and when to try again -------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (Answer(200), Verdict.DELIVERED),
        (Answer(204), Verdict.DELIVERED),
        (Answer(500), Verdict.RETRY),
        (Answer(503), Verdict.RETRY),
        (Answer(408), Verdict.RETRY),
        (Answer(429), Verdict.RETRY),
        (Answer(None, "ConnectError: refused"), Verdict.RETRY),
        (Answer(301), Verdict.GIVE_UP),
        (Answer(400), Verdict.GIVE_UP),
        (Answer(404), Verdict.GIVE_UP),
        (Answer(410), Verdict.GIVE_UP),
    ],
)
def test_what_an_answer_means(answer: Answer, expected: Verdict) -> None:
    assert verdict(answer) is expected


def test_tries_back_off_then_give_up() -> None:
    policy = CallbackPolicy(Backoff(1.0, 2.0, 5.0), attempts=5, lease=60.0)
    assert [policy.next_try(failed) for failed in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, None]


# -- the event -----------------------------------------------------------------------------


def test_the_event_body_is_compact_json_of_fixed_fields() -> None:
    event = CallbackEvent(
        id=1,
        event_id="5f0c7a8e-0000-4000-8000-000000000001",
        cart_id=7,
        uid="mycart",
        url="http://127.0.0.1/h",
        status=CartStatus.ERROR,
        message="file x (a/\u00e9): checksum mismatch",
        files_total=2,
        bytes_total=1024,
        ordered_at=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        occurred_at=datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC),
        attempts=0,
    )
    assert event_body(event) == (
        b'{"event_id":"5f0c7a8e-0000-4000-8000-000000000001","uid":"mycart","status":"error",'
        b'"message":"file x (a/\\u00e9): checksum mismatch","files_total":2,"bytes_total":1024,'
        b'"ordered_at":"2026-01-02T03:04:05.678Z","time":"2026-01-02T03:04:06.000Z"}'
    )


# -- the outbox, written with the status change ----------------------------------------------


def _cart(store: CartStore, uid: str, callback: str | None) -> int:
    orders = [FileOrder(f"{uid}{i}", f"f{i}", "md5", "0" * 32) for i in range(2)]
    cart, _ = store.create_cart(uid, False, orders, callback)
    return cart.id


def _rows(store: CartStore) -> list[dict[str, object]]:
    with store.engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(select(events))]


def test_a_cart_made_ready_or_failed_queues_one_event_for_its_callback(store: CartStore) -> None:
    ready = _cart(store, "r", "http://127.0.0.1/r")
    failed = _cart(store, "f", "http://127.0.0.1/f")
    silent = _cart(store, "s", None)
    for cart_id in (ready, silent):
        assert store.move_cart(cart_id, CartStatus.BUNDLING)
        assert store.move_cart(cart_id, CartStatus.READY)
    assert store.move_cart(failed, CartStatus.ERROR, error="file f0 (f0): gone")
    assert not store.move_cart(failed, CartStatus.ERROR, error="again"), "already in error"

    rows = {row["uid"]: row for row in _rows(store)}
    assert set(rows) == {"r", "f"}
    assert (rows["r"]["status"], rows["r"]["message"], rows["r"]["url"]) == (
        "ready",
        "",
        "http://127.0.0.1/r",
    )
    assert (rows["f"]["status"], rows["f"]["message"]) == ("error", "file f0 (f0): gone")
    assert rows["r"]["files_total"] == 2
    assert rows["r"]["event_id"] != rows["f"]["event_id"]


def test_a_cart_refused_for_want_of_space_queues_its_error(store: CartStore) -> None:
    cart_id = _cart(store, "big", "http://127.0.0.1/big")
    [first, _] = [file.id for file in store.files_of(cart_id)]
    growth = SpaceLedger(store.engine).grow(
        cart_id,
        [(first, 1000, 1.0, True)],
        free_bytes=10**12,
        limit=100,
        evict=True,
        spare_seconds=0.0,
    )
    assert growth is not None
    assert not growth.granted
    [row] = _rows(store)
    # The refused batch's sizes are not recorded: the bytes of files sized so far.
    assert (row["status"], row["message"], row["bytes_total"]) == ("error", NO_SPACE, 0)


def test_one_sender_at_a_time_holds_an_event(store: CartStore) -> None:
    cart_id = _cart(store, "c", "http://127.0.0.1/c")
    store.move_cart(cart_id, CartStatus.ERROR, error="no")
    outbox = Outbox(store.engine)
    [ident] = outbox.due(10)

    mine, theirs = claim_token(), claim_token()
    event = outbox.claim(ident, mine, time.time() + 60)
    assert event is not None
    assert (event.uid, event.status, event.attempts) == ("c", CartStatus.ERROR, 0)
    assert outbox.claim(ident, theirs, time.time() + 60) is None
    assert outbox.due(10) == []

    outbox.retry(ident, theirs, 1, time.time() - 1, "not theirs to record")
    outbox.give_up(ident, theirs)
    assert [row["attempts"] for row in _rows(store)] == [0], "a claim is its holder's only"
    outbox.retry(ident, mine, 1, time.time() + 30, "answered 500")
    assert outbox.due(10) == [], "not due for 30 s"
    [row] = _rows(store)
    assert (row["attempts"], row["last_error"], row["claimed_by"]) == (1, "answered 500", None)


def test_a_lapsed_or_dead_senders_claim_is_taken_over(store: CartStore) -> None:
    cart_id = _cart(store, "l", "http://127.0.0.1/l")
    store.move_cart(cart_id, CartStatus.ERROR, error="no")
    outbox = Outbox(store.engine)
    [ident] = outbox.due(10)
    assert outbox.claim(ident, "gone-host:1:x", time.time() - 1) is not None
    assert outbox.due(10) == [ident], "its claim has lapsed"
    assert outbox.claim(ident, "other-host:2:y", time.time() + 600) is not None
    assert outbox.holders() == {"other-host:2:y"}
    next_due = outbox.next_due()
    assert next_due is not None
    assert next_due > time.time() + 500, "due when that claim lapses"
    outbox.release({"other-host:2:y"})
    assert outbox.due(10) == [ident]
    outbox.delivered(ident)
    assert outbox.next_due() is None


# -- one process's delivery, to a real receiver ----------------------------------------------


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
def delivery(store: CartStore, receiver: Receiver) -> Iterator[CallbackDelivery]:
    sender = HttpSender(SECRET, timeout=5.0)
    policy = CallbackPolicy(Backoff(0.0, 2.0, 0.0), attempts=3, lease=60.0)
    rule = CallbackRule((("127.0.0.1", receiver.port),))
    try:
        yield CallbackDelivery(Outbox(store.engine), sender, rule, policy, Metrics())
    finally:
        sender.close()


def _ended(store: CartStore, uid: str, url: str) -> None:
    cart_id = _cart(store, uid, url)
    store.move_cart(cart_id, CartStatus.BUNDLING)
    store.move_cart(cart_id, CartStatus.READY)


def test_an_event_is_delivered_signed_and_leaves_the_outbox(
    store: CartStore, receiver: Receiver, delivery: CallbackDelivery
) -> None:
    _ended(store, "d", f"{receiver.url}/d")
    assert delivery.deliver_due() == [Verdict.DELIVERED]
    [got] = receiver.to("/d")
    expected = "sha256=" + hmac.new(SECRET.encode(), got.body, hashlib.sha256).hexdigest()
    assert got.headers["x-cartd-signature"] == expected
    assert got.headers["x-cartd-event-id"] == got.event["event_id"]
    assert got.headers["user-agent"].startswith("cartd/")
    assert (got.event["uid"], got.event["status"]) == ("d", "ready")
    assert _rows(store) == []
    assert delivery.deliver_due() == []


def test_an_event_is_given_up_after_its_last_try(
    store: CartStore, receiver: Receiver, delivery: CallbackDelivery
) -> None:
    receiver.answer(503)
    _ended(store, "g", f"{receiver.url}/g")
    seen = [delivery.deliver_due() for _ in range(3)]
    assert seen == [[Verdict.RETRY], [Verdict.RETRY], [Verdict.GIVE_UP]]
    assert [got.answered for got in receiver.to("/g")] == [503, 503, 503]
    assert _rows(store) == []


def test_an_event_to_a_host_no_longer_allowed_is_given_up_unsent(
    store: CartStore, receiver: Receiver, delivery: CallbackDelivery
) -> None:
    _ended(store, "n", "http://127.0.0.1:1/n")  # accepted under another configuration
    assert delivery.deliver_due() == [Verdict.GIVE_UP]
    assert receiver.received == []
    assert _rows(store) == []


def test_no_answer_is_tried_again(store: CartStore, delivery: CallbackDelivery) -> None:
    delivery.rule = CallbackRule((("127.0.0.1", None),))
    _ended(store, "x", "http://127.0.0.1:1/x")  # nothing listens on port 1
    assert delivery.deliver_due() == [Verdict.RETRY]
    [row] = _rows(store)
    assert row["attempts"] == 1
    assert "ConnectError" in str(row["last_error"])


def test_a_receiver_that_never_answers_times_out() -> None:
    with socket.socket() as silent:  # accepts connections (the backlog) and says nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        sender = HttpSender(SECRET, timeout=0.2)
        try:
            answer = sender.send(f"http://127.0.0.1:{silent.getsockname()[1]}/", "e", b"{}")
        finally:
            sender.close()
    assert answer == Answer(None, "no answer within 0.2s (ReadTimeout)")
    assert verdict(answer) is Verdict.RETRY


def test_a_redirect_is_not_followed(
    store: CartStore, receiver: Receiver, delivery: CallbackDelivery
) -> None:
    receiver.answer(307)
    _ended(store, "m", f"{receiver.url}/m")
    assert delivery.deliver_due() == [Verdict.GIVE_UP]
    assert [got.answered for got in receiver.received] == [307]
