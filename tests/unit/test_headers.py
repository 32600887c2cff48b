"""Header values built from text cartd does not control."""

from __future__ import annotations

from email.message import Message
from urllib.parse import unquote

import pytest

from cartd.api.headers import (
    content_disposition,
    header_text,
    preferred_wait,
    requested_range,
    validator_holds,
)
from cartd.errors import RangeNotSatisfiable


def parsed_filename(value: str) -> str | None:
    """The file name a standards-following client reads from the header."""
    message = Message()
    message["Content-Disposition"] = value
    return message.get_filename()


@pytest.mark.parametrize("name", ["data.tar", "data", "data_2024_01_02_03_04_05.tar", "a-b+c.tar"])
def test_plain_names_are_sent_as_the_original_does(name: str) -> None:
    assert content_disposition(name) == f"attachment; filename={name}"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("my data.tar", 'attachment; filename="my data.tar"'),
        ('say "hi".tar', 'attachment; filename="say \\"hi\\".tar"'),
        ("a;b.tar", 'attachment; filename="a;b.tar"'),
        ("back\\slash.tar", 'attachment; filename="back\\\\slash.tar"'),
    ],
)
def test_names_needing_quotes_are_quoted(name: str, expected: str) -> None:
    value = content_disposition(name)
    assert value == expected
    assert parsed_filename(value) == name


@pytest.mark.parametrize("name", ["caf\u00e9.tar", "\u65e5\u672c \u8a9e.tar", "\u00e9'%.tar"])
def test_non_ascii_names_get_filename_star_and_ascii_fallback(name: str) -> None:
    value = content_disposition(name)
    assert value.isascii()
    assert value.startswith('attachment; filename="')
    fallback = value.split('filename="', 1)[1].split('"', 1)[0]
    assert fallback.isascii()
    assert "?" in fallback
    star = value.split("filename*=", 1)[1]
    assert star.startswith("UTF-8''")
    encoded = star.removeprefix("UTF-8''")
    assert all(c.isalnum() or c in "%-._~" for c in encoded), encoded
    assert unquote(encoded, encoding="utf-8") == name


def test_filename_star_example() -> None:
    assert content_disposition("caf\u00e9.tar") == (
        "attachment; filename=\"caf?.tar\"; filename*=UTF-8''caf%C3%A9.tar"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("No Space Available", "No Space Available"),
        ("line one\r\nline two", "line one line two"),
        ("bad\nheader: injected", "bad header: injected"),
        ("nul\x00here", "nul here"),
        ("caf\u00e9", "caf\u00e9"),
        ("\u65e5\u672c file", "?? file"),
        ("emoji \U0001f600", "emoji ?"),
    ],
)
def test_header_text_is_one_latin1_line(text: str, expected: str) -> None:
    result = header_text(text)
    assert result == expected
    assert "\r" not in result
    assert "\n" not in result
    result.encode("latin-1")


def test_header_text_is_limited() -> None:
    assert header_text("x" * 5000) == "x" * 1024
    assert header_text("abcdef", limit=3) == "abc"


SIZE = 10_240


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-99", (0, 100)),
        ("bytes=100-", (100, SIZE)),
        ("bytes=-100", (SIZE - 100, SIZE)),
        ("bytes=-20000", (0, SIZE)),
        ("bytes=10000-20000", (10_000, SIZE)),
        ("bytes=5-5", (5, 6)),
        ("bytes = 7-8", (7, 9)),
    ],
)
def test_a_single_byte_range_is_honoured(header: str, expected: tuple[int, int]) -> None:
    assert requested_range(header, SIZE) == expected


@pytest.mark.parametrize(
    "header",
    [None, "", "bytes=", "bytes=-", "bytes=9-3", "items=0-5", "bytes=0-1,5-6", "bytes=a-b"],
)
def test_anything_else_gets_the_whole_tar(header: str | None) -> None:
    assert requested_range(header, SIZE) is None


@pytest.mark.parametrize("header", [f"bytes={SIZE}-", f"bytes={SIZE + 5}-{SIZE + 9}", "bytes=-0"])
def test_a_range_past_the_end_is_not_satisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        requested_range(header, SIZE)


def test_if_range_holds_only_for_the_current_tag_or_date() -> None:
    tag, date = '"abc"', "Sun, 22 Nov 2026 10:00:00 GMT"
    assert validator_holds(None, tag, date)
    assert validator_holds(tag, tag, date)
    assert validator_holds(date, tag, date)
    assert not validator_holds('"old"', tag, date)
    assert not validator_holds('W/"abc"', tag, date)
    assert not validator_holds("Sun, 22 Nov 2026 09:00:00 GMT", tag, date)


def test_if_range_without_a_date_holds_only_for_the_tag() -> None:
    """A download of a cart being made has no `Last-Modified` yet."""
    assert validator_holds('"abc"', '"abc"', None)
    assert not validator_holds("", '"abc"', None)
    assert not validator_holds("Sun, 22 Nov 2026 09:00:00 GMT", '"abc"', None)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], None),
        (["respond-async"], None),
        (["wait"], 30.0),
        (["WAIT"], 30.0),
        (["wait=5"], 5.0),
        (['wait="7"'], 7.0),
        (["wait=0"], 0.0),
        (["wait=3600"], 30.0),
        (["wait=" + "9" * 5000], 30.0),
        (["respond-async, wait=10"], 10.0),
        (["respond-async", "wait; x=y"], 30.0),
        (["handling=lenient ,  wait = 4 ;q"], 4.0),
        (["wait=soon"], None),
        (["wait="], None),
        (["waiting"], None),
    ],
)
def test_prefer_wait_is_read_as_rfc_7240_writes_it(
    values: list[str], expected: float | None
) -> None:
    assert preferred_wait(values, 30.0) == expected


HUGE = "9" * 5000  # int() refuses strings of more than 4,300 digits


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"bytes=0-{HUGE}", (0, SIZE)),
        (f"bytes=-{HUGE}", (0, SIZE)),
        (f"bytes=5-{'0' * 5000}9", (5, 10)),
        (f"bytes={'0' * 5000}7-8", (7, 9)),
        (f"bytes=-{'0' * 5000}100", (SIZE - 100, SIZE)),
    ],
)
def test_numbers_of_any_length_are_read_as_numbers(header: str, expected: tuple[int, int]) -> None:
    assert requested_range(header, SIZE) == expected


@pytest.mark.parametrize("header", [f"bytes={HUGE}-", f"bytes={HUGE}-{HUGE}1"])
def test_a_huge_start_is_past_the_end(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as caught:
        requested_range(header, SIZE)
    assert len(str(caught.value)) < 200


def test_a_huge_start_after_a_huger_end_is_no_range() -> None:
    assert requested_range(f"bytes={HUGE}-{'9' * 4999}", SIZE) is None
