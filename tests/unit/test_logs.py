"""Log lines about a cart carry its uid, in both formats, on one handler."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from cartd.observability.logs import (
    NOISY_LOGGERS,
    JsonFormatter,
    TextFormatter,
    configure_logging,
    for_cart,
)

LOGGER = "cartd.tests.logs"
TEXT_LINE = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (?P<level>[A-Z]+) (?P<logger>\S+) (?P<rest>.*)"
)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Put the root logger and the quieted loggers back as the test found them."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    noisy = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
    for name, old in noisy.items():
        logging.getLogger(name).setLevel(old)


def configured(fmt: str, level: str = "INFO") -> io.StringIO:
    stream = io.StringIO()
    configure_logging(level, fmt, stream=stream)
    return stream


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines(stream)]


def ours() -> list[logging.Handler]:
    return [
        h for h in logging.getLogger().handlers if type(h).__module__ == "cartd.observability.logs"
    ]


# Text


def test_text_adapter_lines_carry_cart_and_file() -> None:
    stream = configured("text")
    for_cart(logging.getLogger(LOGGER), "c0ffee", file="f1").info("staged %d bytes", 12)
    [line] = lines(stream)
    match = TEXT_LINE.fullmatch(line)
    assert match, line
    assert match["level"] == "INFO"
    assert match["logger"] == LOGGER
    assert match["rest"] == "cart=c0ffee file=f1 staged 12 bytes"


def test_text_plain_lines_have_no_cart() -> None:
    stream = configured("text")
    logging.getLogger(LOGGER).warning("volume is %s", "full")
    [line] = lines(stream)
    match = TEXT_LINE.fullmatch(line)
    assert match, line
    assert match["level"] == "WARNING"
    assert match["rest"] == "volume is full"
    assert "cart=" not in line
    assert "file=" not in line


def test_text_plain_lines_show_file_given_as_extra() -> None:
    stream = configured("text")
    logging.getLogger(LOGGER).info("pulled", extra={"file": "f9"})
    [line] = lines(stream)
    assert line.endswith(f" INFO {LOGGER} file=f9 pulled")


def test_text_quotes_values_with_spaces_or_equals() -> None:
    stream = configured("text")
    for_cart(logging.getLogger(LOGGER), "a b", file='x=y"z').info("m")
    [line] = lines(stream)
    assert line.endswith(r' cart="a b" file="x=y\"z" m')


def test_text_quotes_empty_and_control_characters() -> None:
    stream = configured("text")
    for_cart(logging.getLogger(LOGGER), "", file="a\nb").info("m")
    [line] = lines(stream)
    assert line.endswith(r' cart="" file="a\nb" m')


def test_text_timestamp_is_utc_with_milliseconds() -> None:
    created = datetime(2026, 11, 22, 3, 0, 0, 123_000, tzinfo=UTC).timestamp()
    record = logging.LogRecord("cartd.service.pipeline", logging.INFO, "p", 1, "hi", None, None)
    record.created = created
    record.cart = "u1"
    assert TextFormatter().format(record) == (
        "2026-11-22T03:00:00.123Z INFO cartd.service.pipeline cart=u1 hi"
    )


def test_text_timestamp_rounding_carries_into_the_second() -> None:
    record = logging.LogRecord("x", logging.INFO, "p", 1, "hi", None, None)
    record.created = datetime(2026, 1, 1, 0, 0, 59, tzinfo=UTC).timestamp() + 0.9996
    assert TextFormatter().format(record).startswith("2026-01-01T00:01:00.000Z ")


def test_text_exception_follows_the_line() -> None:
    stream = configured("text")
    try:
        raise ValueError("boom")
    except ValueError:
        for_cart(logging.getLogger(LOGGER), "u1").exception("failed")
    first, *rest = lines(stream)
    assert first.endswith(" ERROR cartd.tests.logs cart=u1 failed")
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "ValueError: boom"


# JSON


def test_json_adapter_records_carry_cart_and_file() -> None:
    stream = configured("json")
    for_cart(logging.getLogger(LOGGER), "c0ffee", file="f1").info("staged %s", "ok")
    [entry] = json_lines(stream)
    assert set(entry) == {"time", "level", "logger", "message", "cart", "file"}
    assert entry["cart"] == "c0ffee"
    assert entry["file"] == "f1"
    assert entry["level"] == "INFO"
    assert entry["logger"] == LOGGER
    assert entry["message"] == "staged ok"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])


def test_json_plain_records_have_no_cart() -> None:
    stream = configured("json")
    logging.getLogger(LOGGER).info("hello")
    [entry] = json_lines(stream)
    assert set(entry) == {"time", "level", "logger", "message"}
    assert entry["message"] == "hello"


def test_json_exception_is_rendered_on_one_line() -> None:
    stream = configured("json")
    try:
        raise ValueError("boom")
    except ValueError:
        for_cart(logging.getLogger(LOGGER), "u1").exception("failed")
    [entry] = json_lines(stream)
    assert entry["level"] == "ERROR"
    assert entry["cart"] == "u1"
    assert entry["message"] == "failed"
    assert entry["exception"].startswith("Traceback (most recent call last):")
    assert entry["exception"].endswith("ValueError: boom")


def test_json_without_exception_has_no_exception_key() -> None:
    stream = configured("json")
    for_cart(logging.getLogger(LOGGER), "u1").error("failed")
    [entry] = json_lines(stream)
    assert "exception" not in entry


def test_extra_adapter_fields_are_rendered_but_foreign_extras_are_not() -> None:
    stream = configured("json")
    log = logging.getLogger(LOGGER)
    for_cart(log, "u1", bundle="b7").info("built")
    log.info("request", extra={"color_message": "\x1b[1mrequest\x1b[0m"})
    built, request = json_lines(stream)
    assert built["cart"] == "u1"
    assert built["bundle"] == "b7"
    assert set(request) == {"time", "level", "logger", "message"}


def test_json_formatter_writes_non_string_values() -> None:
    record = logging.LogRecord("x", logging.INFO, "p", 1, "m", None, None)
    record.file = 42
    assert json.loads(JsonFormatter().format(record))["file"] == 42


# The adapter


def test_caller_extra_is_merged_and_wins() -> None:
    stream = configured("json")
    log = for_cart(logging.getLogger(LOGGER), "u1", file="f1")
    log.info("a", extra={"file": "f2"})
    log.log(logging.WARNING, "b", extra={"cart": "u2", "attempt": "3"})
    log.info("c")
    a, b, c = json_lines(stream)
    assert (a["cart"], a["file"]) == ("u1", "f2")
    assert (b["cart"], b["file"], b["attempt"]) == ("u2", "f1", "3")
    assert (c["cart"], c["file"]) == ("u1", "f1")


def test_adapter_does_not_leak_between_calls_or_adapters() -> None:
    stream = configured("json")
    base = logging.getLogger(LOGGER)
    for_cart(base, "u1").info("a", extra={"file": "f1"})
    for_cart(base, "u2").info("b")
    a, b = json_lines(stream)
    assert a["file"] == "f1"
    assert b["cart"] == "u2"
    assert "file" not in b


def test_for_cart_refuses_field_names_that_clash_with_the_record() -> None:
    with pytest.raises(ValueError, match="name"):
        for_cart(logging.getLogger(LOGGER), "u1", name="x")
    with pytest.raises(ValueError, match="message"):
        for_cart(logging.getLogger(LOGGER), "u1", message="x")


def test_adapter_respects_the_logger_level() -> None:
    stream = configured("text", level="WARNING")
    log = for_cart(logging.getLogger(LOGGER), "u1")
    log.info("hidden")
    log.warning("shown")
    assert [line.rsplit(" ", 1)[-1] for line in lines(stream)] == ["shown"]


# configure_logging


def test_configure_twice_keeps_one_handler() -> None:
    first = configured("text")
    second = configured("json")
    assert len(ours()) == 1
    logging.getLogger(LOGGER).info("once")
    assert first.getvalue() == ""
    assert [e["message"] for e in json_lines(second)] == ["once"]


def test_configure_leaves_other_root_handlers_alone() -> None:
    foreign = logging.StreamHandler(io.StringIO())
    logging.getLogger().addHandler(foreign)
    configured("text")
    configured("text")
    assert foreign in logging.getLogger().handlers


def test_default_stream_is_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging()
    for_cart(logging.getLogger(LOGGER), "u1").info("to stderr")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.rstrip("\n").endswith(" cart=u1 to stderr")


def test_level_is_applied_and_noisy_loggers_are_quieted() -> None:
    stream = configured("text", level="debug")
    assert logging.getLogger().level == logging.DEBUG
    assert logging.getLogger("alembic").level == logging.WARNING
    logging.getLogger("alembic.runtime.migration").info("Running upgrade")
    logging.getLogger(LOGGER).debug("detail")
    assert [line.rsplit(" ", 1)[-1] for line in lines(stream)] == ["detail"]
    configured("text", level="ERROR")
    assert logging.getLogger("alembic").level == logging.ERROR


@pytest.mark.parametrize(("level", "fmt"), [("LOUD", "text"), ("INFO", "xml")])
def test_unknown_level_or_format_is_refused(level: str, fmt: str) -> None:
    before = logging.getLogger().handlers[:]
    with pytest.raises(ValueError, match="unknown log"):
        configure_logging(level, fmt, stream=io.StringIO())
    assert logging.getLogger().handlers == before
