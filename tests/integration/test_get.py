"""`cartd get` as a person runs it, against a real cartd (and the real original Pacifica
Cartd) in front of the real Archive Interface: as a process, piped, on a pseudo-terminal
and interrupted; and, where only its outcome is looked at, run by this process through
the same command line parser (which spares the start of a Python process). Faults the
servers cannot produce (a connection cut mid-download, a byte flipped on the way) come
from a proxy in between that speaks plain HTTP."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cartd.cli import build_parser
from tests.conftest import FileEntry, ServerFactory, entry
from tests.support.archive_interface import ArchiveInterface
from tests.support.cartd_server import CartdServer
from tests.support.fault_archive import FaultArchive, Faults
from tests.support.original_service import OriginalCartd
from tests.support.tar_proxy import TarProxy
from tests.support.tars import tar_files
from tests.support.watching import FOREVER, MTIME

pytestmark = pytest.mark.archive

Store = Callable[..., list[FileEntry]]


@pytest.fixture(scope="module")
def server(
    archive_interface: ArchiveInterface, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CartdServer]:
    workdir = tmp_path_factory.mktemp("get-cartd")
    env = {"ARCHIVE_INTERFACE_URL": archive_interface.url, "VOLUME_PATH": str(workdir / "vol")}
    with CartdServer(workdir, env) as running:
        yield running


def _env(folder: Path, **extra: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(folder), **extra}


def cartd_get(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cartd", "get", *args],
        cwd=cwd,
        env=_env(cwd),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def run_get(*args: str) -> int:
    """`cartd get ARGS` in this process, its output in pytest's capture (not a terminal)."""
    parsed = build_parser().parse_args(["get", *args])
    code: int = parsed.handler(parsed)
    return code


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's folder as the current one, where `cartd get` puts and looks for files."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_order(folder: Path, fileids: list[FileEntry]) -> str:
    path = folder / "order.json"
    path.write_text(json.dumps({"fileids": fileids}))
    return str(path)


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.glob("*.tar*"))


def test_piped_it_prints_plain_lines_keeps_a_verified_tar_and_unpacks_it(
    server: CartdServer, store_files: Store, tmp_path: Path
) -> None:
    data = {"runs/1/a.dat": os.urandom(300_000), "b.txt": b"hello\n"}
    fileids = store_files({"runs/1/a.dat": data["runs/1/a.dat"]}, "sha256")
    fileids += store_files({"b.txt": data["b.txt"]}, "md5")
    order = write_order(tmp_path, fileids)

    result = cartd_get(
        order, "--server", server.url, "-o", "mine.tar", "--extract", "out", cwd=tmp_path
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("ordered cart "), lines
    assert lines[0].endswith(f"of 2 files from {server.url}")
    assert any(line.startswith("downloading ") for line in lines), lines
    assert lines[-2:] == [
        "verified 2 files against the order's checksums; saved mine.tar",
        "unpacked into out",
    ]
    assert "\x1b" not in result.stdout, "no terminal codes in a pipe"
    kept = tar_files((tmp_path / "mine.tar").read_bytes())
    assert kept == {f"mine/{path}": content for path, content in data.items()}
    for path, content in data.items():
        assert (tmp_path / "out" / path).read_bytes() == content
    assert leftovers(tmp_path) == ["mine.tar"]


def test_on_a_terminal_it_draws_bars(
    server: CartdServer, store_files: Store, tmp_path: Path
) -> None:
    order = write_order(tmp_path, store_files({"bar.dat": os.urandom(100_000)}))
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "cartd", "get", order, "--server", server.url, "-o", "t.tar"],
        cwd=tmp_path,
        env=_env(tmp_path, TERM="xterm-256color", COLUMNS="120", LINES="40"),
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the command ended and the terminal closed
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)

    assert process.wait(30) == 0, output
    text = output.decode("utf-8", "replace")
    assert "━" in text, text  # rich's bar
    assert "100%" in text
    assert "\x1b[" in text, "drawn in place with terminal codes"
    assert "verified 1 files" in text
    assert leftovers(tmp_path) == ["t.tar"]


def test_a_download_cut_short_is_taken_up_with_a_range(
    server: CartdServer, store_files: Store, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = {"big.dat": os.urandom(400_000)}
    order = write_order(in_tmp, store_files(data, "sha1"))
    with TarProxy(server.url) as proxy:
        proxy.cut_after, proxy.cuts = 100_000, 1
        code = run_get(order, "--server", proxy.url, "-o", "cut.tar")
        tars = proxy.tar_requests()

    assert code == 0, capsys.readouterr()
    assert tars[0].headers["prefer"] == "wait=10", "asked to be sent while it is made"
    ranged = [seen for seen in tars if "range" in seen.headers]
    assert len(ranged) == 1, tars
    assert ranged[0].headers["range"] == "bytes=100000-"
    assert ranged[0].headers["if-range"].startswith('"')  # the ETag of the first answer
    assert tar_files((in_tmp / "cut.tar").read_bytes()) == {"cut/big.dat": data["big.dat"]}
    assert leftovers(in_tmp) == ["cut.tar"]


def test_run_again_after_giving_up_it_resumes_the_part(
    server: CartdServer, store_files: Store, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = {"again.dat": os.urandom(400_000)}
    order = write_order(in_tmp, store_files(data))
    with TarProxy(server.url) as proxy:
        proxy.cut_after, proxy.cuts = 150_000, 100
        assert run_get(order, "--server", proxy.url, "--retries", "0") == 1
        first = capsys.readouterr()

        assert "run the same command again to resume" in first.err
        [part, state] = leftovers(in_tmp)
        assert part.endswith(".tar.part")
        assert state == f"{part}.json"
        assert (in_tmp / part).stat().st_size == 150_000

        proxy.cuts = 0
        code = run_get(order, "--server", proxy.url, "--retries", "0")
        second = capsys.readouterr()
        last = proxy.tar_requests()[-1]

    assert code == 0, second
    assert "taking up cart" in second.out
    assert "ordered cart" not in second.out, "the same cart, not a new one"
    assert last.headers["range"] == "bytes=150000-"
    tar = part.removesuffix(".part")
    assert leftovers(in_tmp) == [tar]
    top = tar.removesuffix(".tar")
    assert tar_files((in_tmp / tar).read_bytes()) == {f"{top}/again.dat": data["again.dat"]}


def test_a_failed_cart_exits_1_with_its_error_and_leaves_no_file(
    server: CartdServer, store_files: Store, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fileids = store_files({"wrong.dat": b"the bytes in the archive\n"})
    fileids[0]["hashsum"] = hashlib.md5(b"other bytes").hexdigest()
    order = write_order(in_tmp, fileids)

    code = run_get(order, "--server", server.url, "-o", "failed.tar")

    told = capsys.readouterr()
    assert code == 1, told
    [message] = told.err.splitlines()
    assert message.startswith("cartd get: the cart failed: ")
    assert fileids[0]["id"] in message, "the cart's own error names the file"
    assert leftovers(in_tmp) == []


def test_a_member_tampered_with_on_the_way_exits_3_naming_it(
    server: CartdServer, store_files: Store, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fine = os.urandom(20_000)
    tampered = b"MARKER-" + os.urandom(50_000)
    order = write_order(in_tmp, store_files({"fine.dat": fine, "sub/tampered.dat": tampered}))
    with TarProxy(server.url) as proxy:
        proxy.flip = (b"MARKER-", b"MARKER+")
        code = run_get(order, "--server", proxy.url, "-o", "t.tar")

    told = capsys.readouterr()
    assert code == 3, told
    assert "t/sub/tampered.dat" in told.err
    assert "fine.dat" not in told.err
    assert leftovers(in_tmp) == ["t.tar.bad"], "no t.tar, and nothing left to resume"


def test_interrupted_while_a_file_is_on_tape_then_run_again(
    cartd_factory: ServerFactory, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cart being made is sent as it is made (`Prefer: wait`); Ctrl-C leaves FILE.part
    and never FILE; the same command run again finishes it."""
    near, far = os.urandom(30_000), os.urandom(30_000)
    with FaultArchive() as archive:
        archive.add("near", near, mtime=MTIME)
        # On tape until the test lets it go: the first run must be seen waiting for it.
        archive.add("far", far, mtime=MTIME, faults=Faults(tape_seconds=FOREVER))
        server = cartd_factory(archive.url)
        fileids = [entry("near", near, "near.dat"), entry("far", far, "far.dat")]
        order = write_order(in_tmp, fileids)
        args = [sys.executable, "-m", "cartd", "get", order, "--server", server.url]
        process = subprocess.Popen(
            [*args, "-o", "tape.tar"],
            cwd=in_tmp,
            env=_env(in_tmp),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        seen: list[str] = []
        for line in process.stdout:  # until the download began and the holder was named
            seen.append(line)
            starts = {line.split(" ", 2)[0] for line in seen}
            if {"downloading", "held"} <= starts:
                break
        process.send_signal(signal.SIGINT)
        rest, errors = process.communicate(timeout=30)

        assert process.returncode == 130, (seen, rest, errors)
        assert "interrupted" in errors
        assert "Traceback" not in errors
        assert "tape.tar" not in leftovers(in_tmp)
        assert "tape.tar.part" in leftovers(in_tmp)
        assert any(line.startswith("held up by ") for line in seen), seen

        archive.add("far", far, mtime=MTIME)  # on disk from now on
        code = run_get(order, "--server", server.url, "-o", "tape.tar")

    again = capsys.readouterr()
    assert code == 0, again
    assert "taking up cart" in again.out
    assert tar_files((in_tmp / "tape.tar").read_bytes()) == {
        "tape/near.dat": near,
        "tape/far.dat": far,
    }


@pytest.fixture(scope="module")
def original(
    archive_interface: ArchiveInterface, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OriginalCartd]:
    with OriginalCartd(tmp_path_factory.mktemp("original"), archive_interface.url) as running:
        yield running


@pytest.mark.rabbitmq
def test_against_the_original_it_polls_then_downloads_whole(
    original: OriginalCartd, store_files: Store, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = {"a/one.txt": b"one\n", "two.dat": os.urandom(100_000)}
    order = write_order(in_tmp, store_files(data, "sha256"))

    code = run_get(order, "--server", original.url, "-o", "orig.tar", "--extract", "out")

    told = capsys.readouterr()
    assert code == 0, told.err + original.log()
    assert "cart ready" in told.out.splitlines(), "no phase nor counts: the original has none"
    assert "downloading of unknown size" in told.out  # the original sends no length
    kept = tar_files((in_tmp / "orig.tar").read_bytes())
    assert kept == {f"orig/{path}": content for path, content in data.items()}
    for path, content in data.items():
        assert (in_tmp / "out" / path).read_bytes() == content
