"""The pure pieces of `cartd get`: the order, the member checks, the resumable body, the
part files, the plain display, the holder of a cart, and safe unpacking. None needs a
server; the tars are laid out by the server's own `cartd.bundle`."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cartd.bundle import iter_tar, layout
from cartd.cli import build_parser
from cartd.client.errors import (
    EXIT_MISMATCH,
    EXIT_USAGE,
    ExtractFailed,
    OrderError,
    TransferFailed,
    VerificationFailed,
)
from cartd.client.extract import extract
from cartd.client.order import LoadedOrder, load_order
from cartd.client.parts import PartFiles, Resumable
from cartd.client.progress import PlainDisplay
from cartd.client.session import CartState, FileState
from cartd.client.transfer import RetryPolicy, TarBody
from cartd.client.verify import MemberCheck, check_ending, verify_tar
from cartd.client.watch import holder_text
from cartd.folders import Entry

CONTENTS = {
    "runs/1/a.dat": os.urandom(3000),
    "b.txt": b"hello\n",
    "empty": b"",
    "deep/" + "n" * 150 + ".txt": b"a long name, carried in a PAX header",
}


def order_of(contents: dict[str, bytes], hashtype: str = "sha256") -> LoadedOrder:
    fileids = [
        {
            "id": f"id{number}",
            "path": path,
            "hashtype": hashtype,
            "hashsum": hashlib.new(hashtype, data).hexdigest(),
        }
        for number, (path, data) in enumerate(contents.items())
    ]
    return load_order("-", [], io.BytesIO(json.dumps({"fileids": fileids}).encode()))


def server_tar(tmp_path: Path, contents: dict[str, bytes], top: str = "cart") -> bytes:
    """The tar cartd sends for these files."""
    entries = []
    for number, (path, data) in enumerate(contents.items()):
        source = tmp_path / f"staged-{number}"
        source.write_bytes(data)
        entries.append(Entry(path, len(data), source.stat().st_mtime, source))
    return b"".join(iter_tar(layout(top, entries, 1_700_000_000), 1 << 16))


def check(order: LoadedOrder, data: bytes) -> int:
    return verify_tar(io.BytesIO(data), MemberCheck(order.members()))


# -- the order ------------------------------------------------------------------------


def test_an_order_file_is_sent_as_it_is(tmp_path: Path) -> None:
    body = {"fileids": [{"id": 7, "path": "/a//./b.txt", "hashtype": "MD5", "hashsum": "A" * 32}]}
    body["callback"] = "http://127.0.0.1:1/"  # a key cartd get does not know
    path = tmp_path / "order.json"
    path.write_text(json.dumps(body))

    order = load_order(str(path), [], io.BytesIO())

    assert order.body == path.read_bytes()
    assert order.digest == hashlib.sha256(order.body).hexdigest()
    [file] = order.files
    assert (file.archive_id, file.path, file.hashtype, file.hashsum) == (
        "7",
        "a/b.txt",
        "md5",
        "a" * 32,
    )
    assert list(order.members()) == ["a/b.txt"]


def test_an_order_from_arguments() -> None:
    order = load_order(None, [["foo.txt", "1/2/foo.txt", "sha1", "0" * 40]], io.BytesIO())

    assert json.loads(order.body) == {
        "fileids": [
            {"id": "foo.txt", "path": "1/2/foo.txt", "hashtype": "sha1", "hashsum": "0" * 40}
        ]
    }


@pytest.mark.parametrize(
    ("source", "files", "stdin", "told"),
    [
        (None, [], b"", "give an ORDER file"),
        ("-", [["a", "b", "md5", ""]], b"", "not both"),
        ("-", [], b"{not json", "the order on standard input: the request body is not valid JSON"),
        (
            "-",
            [],
            b'{"fileids": [{"id": "a", "path": "../x", "hashtype": "md5", "hashsum": ""}]}',
            "fileids[0].path",
        ),
        ("/nonexistent/order.json", [], b"", "cannot read the order /nonexistent/order.json"),
        (None, [["a", "p", "crc32", "00"]], b"", "--file: fileids[0].hashtype"),
    ],
    ids=["nothing", "both", "not-json", "bad-path", "unreadable", "bad-hashtype"],
)
def test_an_order_that_cannot_be_sent_is_told_at_once(
    source: str | None, files: list[list[str]], stdin: bytes, told: str
) -> None:
    with pytest.raises(OrderError) as caught:
        load_order(source, files, io.BytesIO(stdin))
    assert told in caught.value.message
    assert caught.value.exit_code == EXIT_USAGE


# -- the members, checked -------------------------------------------------------------


def test_the_servers_tar_verifies_whatever_its_top_folder(tmp_path: Path) -> None:
    order = order_of(CONTENTS)
    assert check(order, server_tar(tmp_path, CONTENTS, top="mine")) == len(CONTENTS)
    assert check(order, server_tar(tmp_path, CONTENTS, top="the-uid")) == len(CONTENTS)


def test_a_byte_changed_in_a_member_names_it(tmp_path: Path) -> None:
    order = order_of(CONTENTS, "md5")
    data = server_tar(tmp_path, CONTENTS)
    at = data.index(CONTENTS["b.txt"])
    damaged = data[:at] + b"j" + data[at + 1 :]

    with pytest.raises(VerificationFailed) as caught:
        check(order, damaged)

    assert caught.value.message == "cart/b.txt: its md5 is not the order's for b.txt (id id1)"
    assert caught.value.exit_code == EXIT_MISMATCH


def test_a_file_missing_from_the_tar_is_named(tmp_path: Path) -> None:
    order = order_of(CONTENTS)
    partial = {path: data for path, data in CONTENTS.items() if path != "b.txt"}
    with pytest.raises(VerificationFailed, match=r"^missing from the tar: b\.txt$"):
        check(order, server_tar(tmp_path, partial))


def test_a_file_the_order_does_not_name_is_refused(tmp_path: Path) -> None:
    order = order_of({"b.txt": CONTENTS["b.txt"]})
    with pytest.raises(VerificationFailed, match=r"^cart/runs/1/a\.dat: not in the order$"):
        check(order, server_tar(tmp_path, CONTENTS))


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def test_members_outside_one_top_folder_twice_or_not_files_are_refused() -> None:
    order = order_of({"a": b"1", "b": b"2"})
    link = tarfile.TarInfo("top/b")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    cases = {
        "other/b: outside the tar's top folder 'top'": _tar(
            _file("top/a", b"1"), _file("other/b", b"2")
        ),
        "top/a: twice in the tar": _tar(_file("top/a", b"1"), _file("top/a", b"1")),
        "top/b: not a regular file": _tar(_file("top/a", b"1"), (link, b"")),
    }
    for message, data in cases.items():
        with pytest.raises(VerificationFailed) as caught:
            check(order, data)
        assert caught.value.message == message


def test_a_tar_cut_short_is_not_verified(tmp_path: Path) -> None:
    data = server_tar(tmp_path, CONTENTS)
    within_a_member = data[: data.index(CONTENTS["runs/1/a.dat"]) + 100]
    with pytest.raises(VerificationFailed, match="not a whole, readable tar"):
        check(order_of(CONTENTS), within_a_member)
    between_members = data[: data.index(CONTENTS["b.txt"]) - 512]
    with pytest.raises(VerificationFailed, match=r"^missing from the tar: b\.txt, deep/n+"):
        check(order_of(CONTENTS), between_members)


def test_a_tar_must_end_with_its_end_of_archive_blocks(tmp_path: Path) -> None:
    data = server_tar(tmp_path, CONTENTS)
    whole, cut = tmp_path / "whole.tar", tmp_path / "cut.tar"
    whole.write_bytes(data)
    cut.write_bytes(data[:-512])
    check_ending(whole)
    with pytest.raises(VerificationFailed, match="end-of-archive"):
        check_ending(cut)


def test_the_check_is_fed_member_by_member() -> None:
    order = order_of({"x/y": b"abc"}, "sha512")
    member = MemberCheck(order.members())
    member.folder("top")
    member.folder("top/x")
    member.begin("top/x/y")
    member.update(b"a")
    member.update(b"bc")
    member.end()
    assert member.finish() == 1
    unfinished = MemberCheck(order.members())
    unfinished.begin("top/x/y")
    with pytest.raises(VerificationFailed, match="cut short"):
        unfinished.finish()


# -- the resumable body ---------------------------------------------------------------


class Pieces(httpx.SyncByteStream):
    """An answer's body: these pieces, then perhaps an error (a cut, a stall)."""

    def __init__(self, *pieces: bytes, then: Exception | None = None) -> None:
        self.pieces, self.then = pieces, then

    def __iter__(self) -> Iterator[bytes]:
        yield from self.pieces
        if self.then is not None:
            raise self.then


def answer(
    *pieces: bytes, status: int = 206, then: Exception | None = None, live: bool = False
) -> httpx.Response:
    headers = {"Preference-Applied": "wait"} if live else {}
    return httpx.Response(status, headers=headers, stream=Pieces(*pieces, then=then))


class Server:
    """Answers to the resumptions a body asks for, and what it asked."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers)
        self.asked: list[int] = []

    def __call__(self, start: int) -> httpx.Response:
        self.asked.append(start)
        return self.answers.pop(0)


def body_of(
    part: Path,
    have: int,
    first: httpx.Response,
    total: int | None,
    server: Server,
    pauses: list[float],
    tries: int = 2,
) -> TarBody:
    return TarBody(
        part,
        have,
        first,
        total,
        server,
        policy=RetryPolicy(tries=tries),
        on_bytes=lambda _: None,
        sleep=pauses.append,
    )


def test_a_resumed_body_reads_the_part_then_the_network_and_appends(tmp_path: Path) -> None:
    part = tmp_path / "f.tar.part"
    part.write_bytes(b"abc")
    pauses: list[float] = []
    with body_of(part, 3, answer(b"de", b"f"), 6, Server(), pauses) as body:
        assert body.read() == b"abcdef"
    assert part.read_bytes() == b"abcdef"
    assert pauses == []


def test_a_cut_is_asked_again_from_where_it_broke_after_a_pause(tmp_path: Path) -> None:
    part = tmp_path / "f.tar.part"
    part.write_bytes(b"")
    server = Server(answer(b"cd", then=httpx.RemoteProtocolError("cut")), answer(b"ef"))
    pauses: list[float] = []
    first = answer(b"ab", status=200, then=httpx.RemoteProtocolError("peer closed"))
    with body_of(part, 0, first, 6, server, pauses) as body:
        assert body.read() == b"abcdef"
    assert server.asked == [2, 4]
    assert pauses == [0.5, 0.5], "bytes arriving reset the count of cuts"
    assert part.read_bytes() == b"abcdef"


def test_it_gives_up_after_its_tries_without_progress(tmp_path: Path) -> None:
    part = tmp_path / "f.tar.part"
    part.write_bytes(b"")
    server = Server(answer(then=httpx.ReadError("reset")), answer())  # the last ends early
    pauses: list[float] = []
    first = answer(b"ab", status=200, then=httpx.RemoteProtocolError("cut"))
    with (
        body_of(part, 0, first, 6, server, pauses) as body,
        pytest.raises(TransferFailed) as caught,
    ):
        body.read()
    assert (
        caught.value.message == "the download broke off 3 times in a row at byte 2 (it ended early)"
    )
    assert pauses == [0.5, 1.0]
    assert part.read_bytes() == b"ab", "what came is kept for the next run"


def test_a_stall_while_the_cart_is_made_is_no_failure(tmp_path: Path) -> None:
    part = tmp_path / "f.tar.part"
    part.write_bytes(b"")
    stalls = [answer(then=httpx.ReadTimeout("nothing yet"), live=True) for _ in range(5)]
    server = Server(*stalls, answer(b"cd", live=True))
    pauses: list[float] = []
    first = answer(b"ab", status=200, live=True, then=httpx.ReadTimeout("tape"))
    with body_of(part, 0, first, 4, server, pauses, tries=1) as body:
        assert body.read() == b"abcd"
    assert pauses == []
    assert server.asked == [2] * 6


def test_without_a_length_the_answer_ends_the_tar(tmp_path: Path) -> None:
    part = tmp_path / "f.tar.part"
    part.write_bytes(b"")
    with body_of(part, 0, answer(b"ab", b"cd", status=200), None, Server(), []) as body:
        assert body.read() == b"abcd"


# -- the part files -------------------------------------------------------------------


def test_the_part_of_an_earlier_run_is_found_by_server_and_order(tmp_path: Path) -> None:
    mine = Resumable("http://s", "u1", "order-1", '"tag"')
    for name, kept in {
        "other-order.tar": Resumable("http://s", "u2", "order-2"),
        "other-server.tar": Resumable("http://t", "u3", "order-1"),
        "mine.tar": mine,
    }.items():
        PartFiles(tmp_path / name).save(kept)
    (tmp_path / "broken.tar.part.json").write_text("{")

    found = PartFiles.find(tmp_path, "http://s", "order-1")

    assert found is not None
    assert found.target == tmp_path / "mine.tar"
    assert found.load() == mine
    assert PartFiles.find(tmp_path, "http://s", "order-3") is None


def test_a_part_becomes_the_file_or_the_bad_file(tmp_path: Path) -> None:
    good = PartFiles(tmp_path / "good.tar")
    good.part.write_bytes(b"tar")
    good.save(Resumable("http://s", "u", "o"))
    good.complete()
    bad = PartFiles(tmp_path / "bad.tar")
    bad.part.write_bytes(b"rat")
    bad.save(Resumable("http://s", "u", "o"))
    assert bad.reject() == tmp_path / "bad.tar.bad"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bad.tar.bad", "good.tar"]


# -- what is shown --------------------------------------------------------------------


def test_plain_lines_tell_each_change_once() -> None:
    out = io.StringIO()
    shown = PlainDisplay(out, every=3600)
    staging = CartState(
        "staging", phase="staging", files_total=2, files_staged=0, bytes_total=2000, bytes_staged=0
    )
    shown.staging(staging)
    shown.staging(
        CartState(
            "staging",
            phase="staging",
            files_total=2,
            files_staged=1,
            bytes_total=2000,
            bytes_staged=1000,
        )
    )
    shown.holder("b: on tape, asked 3 times")
    shown.holder("b: on tape, asked 3 times")
    shown.staging(
        CartState(
            "ready",
            phase="ready",
            files_total=2,
            files_staged=2,
            bytes_total=2000,
            bytes_staged=2000,
        )
    )
    shown.download(3072, 1024)
    shown.advance(2048)
    shown.downloaded()
    lines = out.getvalue().splitlines()
    assert lines[:4] == [
        "cart staging: 0/2 files, 0 bytes of 2.0 kB",
        "held up by b: on tape, asked 3 times",
        "cart ready: 2/2 files, 2.0 kB of 2.0 kB",
        "downloading 3.1 kB, resuming after 1.0 kB",
    ]
    assert lines[4].startswith("downloaded 3.1 kB of 3.1 kB (100%), ")
    assert len(lines) == 5


def test_the_original_tells_only_its_status() -> None:
    out = io.StringIO()
    PlainDisplay(out).staging(CartState("staging"))
    assert out.getvalue() == "cart staging\n"


def _file_state(
    path: str, status: str, *, error: str | None = None, attempts: int = 0, polls: int = 0
) -> FileState:
    return FileState(path, status, error, attempts, polls)


def test_the_holder_is_the_file_with_the_most_to_say() -> None:
    staged = _file_state("done", "staged")
    waiting = _file_state("next", "waiting")
    pulling = _file_state("now", "staging")
    retried = _file_state("flaky", "staging", attempts=2, error="archive answered 500")
    on_tape = _file_state("tape", "staging", polls=4)
    failed = _file_state("bad", "error", error="checksum mismatch")
    assert holder_text([staged]) is None
    assert holder_text([staged, waiting]) == "next: waiting its turn"
    assert holder_text([waiting, pulling]) == "now: being staged (and 1 more files)"
    assert (
        holder_text([pulling, retried])
        == "flaky: 2 failed tries, retrying (archive answered 500) (and 1 more files)"
    )
    assert holder_text([retried, on_tape]) == "tape: on tape, asked 4 times (and 1 more files)"
    assert holder_text([on_tape, failed]) == "bad: failed: checksum mismatch (and 1 more files)"


# -- unpacking ------------------------------------------------------------------------


def test_extract_leaves_out_the_top_folder(tmp_path: Path) -> None:
    tar = tmp_path / "t.tar"
    tar.write_bytes(server_tar(tmp_path, CONTENTS, top="t"))
    extract(tar, tmp_path / "out")
    for path, data in CONTENTS.items():
        assert (tmp_path / "out" / path).read_bytes() == data
    assert not (tmp_path / "out" / "t").exists()


def test_extract_refuses_what_would_land_outside(tmp_path: Path) -> None:
    tar = tmp_path / "evil.tar"
    tar.write_bytes(_tar(_file("top/../../escaped", b"x")))
    with pytest.raises(ExtractFailed, match="outside the destination"):
        extract(tar, tmp_path / "out" / "in")
    assert not (tmp_path / "escaped").exists()
    assert not (tmp_path / "out" / "escaped").exists()


# -- the command line -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "told"),
    [
        (["--uid", "../x"], "invalid cart uid '../x'"),
        (["--server", "ftp://127.0.0.1/"], "--server must be an http:// or https:// URL"),
        (["--order-is-bad"], "fileids[0].hashsum has 3 hex digits; md5 has 32"),
    ],
    ids=["uid", "server", "order"],
)
def test_usage_errors_exit_2_before_any_request(
    args: list[str],
    told: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    hashsum = "abc" if args == ["--order-is-bad"] else "0" * 32
    order = tmp_path / "order.json"
    order.write_text(
        json.dumps({"fileids": [{"id": 1, "path": "p", "hashtype": "md5", "hashsum": hashsum}]})
    )
    given = [arg for arg in args if arg != "--order-is-bad"]
    if "--server" not in given:
        given += ["--server", "http://127.0.0.1:9"]  # nothing listens there: never asked
    parsed = build_parser().parse_args(["get", str(order), *given])

    assert parsed.handler(parsed) == EXIT_USAGE
    assert told in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["order.json"]
