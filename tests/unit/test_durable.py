"""The pulled-file writer: every byte lands, in order, and a disk error is not lost."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cartd import durable
from cartd.durable import DIRECT_FROM, DurableFile

SIZES = pytest.mark.parametrize("expected_size", [0, DIRECT_FROM], ids=["plain", "direct"])


def chunks(total: int, size: int) -> list[bytes]:
    data = os.urandom(total)
    return [data[start : start + size] for start in range(0, total, size)]


def write_and_read_back(target: Path, expected_size: int) -> None:
    # Odd sizes: chunks straddle the direct blocks, and the file ends mid-block.
    parts = chunks(3 * durable.DIRECT_BLOCK + durable.WRITEBACK_EVERY + 12345, 1024 * 1024 + 7)
    write_all(target, parts, expected_size)
    assert target.read_bytes() == b"".join(parts)


@SIZES
def test_every_byte_lands_in_order(tmp_path: Path, expected_size: int) -> None:
    write_and_read_back(tmp_path / "pulled", expected_size)


@SIZES
def test_a_file_of_whole_blocks_lands_whole(tmp_path: Path, expected_size: int) -> None:
    data = os.urandom(4 * durable.DIRECT_BLOCK)
    target = tmp_path / "pulled"
    write_all(target, [data], expected_size)
    assert target.read_bytes() == data


@SIZES
def test_a_write_error_past_a_file_size_limit_reaches_the_puller(
    tmp_path: Path, expected_size: int
) -> None:
    """RLIMIT_FSIZE makes the kernel refuse writes past 3 MiB (EFBIG): a real fault,
    raised on whichever thread writes. Run apart, so the limit binds nothing else."""
    script = f"""
import errno, resource, signal
from pathlib import Path
from cartd.durable import DurableFile
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (3 * 1024 * 1024, resource.RLIM_INFINITY))
try:
    with DurableFile(Path({str(tmp_path / "pulled")!r}), expected_size={expected_size}) as out:
        for _ in range(64):
            out.write(bytes(256 * 1024))
        out.commit()
except OSError as exc:
    print(errno.errorcode[exc.errno])
"""
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert run.stdout.strip() == "EFBIG"


def abandon(target: Path, expected_size: int) -> None:
    with DurableFile(target, expected_size=expected_size) as out:
        out.write(b"x" * 1000)
        raise RuntimeError("the archive broke off")


def write_all(target: Path, parts: list[bytes], expected_size: int) -> None:
    with DurableFile(target, expected_size=expected_size) as out:
        for part in parts:
            out.write(part)
        out.commit()


@SIZES
def test_a_file_left_without_commit_is_closed_not_completed(
    tmp_path: Path, expected_size: int
) -> None:
    target = tmp_path / "pulled"
    with pytest.raises(RuntimeError, match="broke off"):
        abandon(target, expected_size)
    assert target.stat().st_size <= 1000  # closed; the caller removes it


@SIZES
def test_a_full_disk_is_raised_to_the_puller(expected_size: int) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    parts = chunks(4 * 1024 * 1024, 64 * 1024)
    with pytest.raises(OSError, match="No space left") as caught:
        write_all(Path("/dev/full"), parts, expected_size)
    assert caught.value.errno == errno.ENOSPC


def test_a_file_in_a_folder_not_made_yet_gets_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "carts" / "7" / "partial" / "1.part"
    with DurableFile(path, expected_size=3) as out:
        out.write(b"abc")
        out.commit(sync=False)
    assert path.read_bytes() == b"abc"
