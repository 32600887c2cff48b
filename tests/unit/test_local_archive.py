"""A folder as the archive: ids reach only regular files inside it, links followed."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from cartd.archive import local
from cartd.archive.base import Abort
from cartd.archive.local import FolderArchive
from cartd.errors import PermanentArchiveError


@pytest.fixture
def archive(tmp_path: Path) -> FolderArchive:
    root = tmp_path / "archive"
    (root / "runs").mkdir(parents=True)
    (root / "runs" / "42.dat").write_bytes(b"x" * 10_000)
    os.utime(root / "runs" / "42.dat", (1_600_000_000, 1_600_000_000))
    (tmp_path / "secret").write_bytes(b"not yours")
    return FolderArchive(root, chunk_size=4096)


def read(archive: FolderArchive, file_id: str) -> bytes:
    with archive.read(file_id, Abort()) as chunks:
        return b"".join(chunks)


def size(archive: FolderArchive, file_id: str) -> int:
    return archive.status(file_id, Abort()).size


ASKS = pytest.mark.parametrize("ask", [size, read], ids=["status", "read"])


def test_a_file_inside_is_sized_and_read_whole(archive: FolderArchive) -> None:
    info = archive.status("runs/42.dat", Abort())
    assert (info.size, info.mtime, info.on_disk) == (10_000, 1_600_000_000, True)
    assert read(archive, "/runs/42.dat") == b"x" * 10_000


def test_a_link_to_a_file_inside_is_followed(archive: FolderArchive) -> None:
    (Path(archive.root) / "latest").symlink_to("runs/42.dat")
    assert archive.status("latest", Abort()).size == 10_000
    assert read(archive, "latest") == b"x" * 10_000


@ASKS
@pytest.mark.parametrize("file_id", ["../secret", "runs/../../secret", "out/secret", "out"])
def test_nothing_outside_the_folder_is_sized_or_read(
    archive: FolderArchive, tmp_path: Path, file_id: str, ask: Callable[..., object]
) -> None:
    (Path(archive.root) / "out").symlink_to(tmp_path)
    with pytest.raises(PermanentArchiveError, match="outside the archive folder"):
        ask(archive, file_id)


def test_a_link_out_to_nothing_is_outside_not_missing(
    archive: FolderArchive, tmp_path: Path
) -> None:
    (Path(archive.root) / "out").symlink_to(tmp_path)
    with pytest.raises(PermanentArchiveError, match="outside the archive folder"):
        archive.status("out/no-such-file", Abort())
    with pytest.raises(PermanentArchiveError, match="no such file"):
        archive.status("runs/no-such-file", Abort())


@ASKS
@pytest.mark.parametrize("file_id", ["runs/pipe", "runs"])
def test_a_pipe_or_a_folder_is_refused_without_being_opened(
    archive: FolderArchive, file_id: str, ask: Callable[..., object]
) -> None:
    os.mkfifo(Path(archive.root) / "runs" / "pipe")  # opened to be read, it would block
    with pytest.raises(PermanentArchiveError, match="not a regular file"):
        ask(archive, file_id)


def test_no_descriptor_is_left_open(archive: FolderArchive) -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        archive.status("runs/42.dat", Abort())
        read(archive, "runs/42.dat")
        with pytest.raises(PermanentArchiveError):
            archive.status("../secret", Abort())
    assert len(os.listdir("/proc/self/fd")) == before


def test_without_o_path_and_proc_the_path_is_checked_first(
    archive: FolderArchive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where `/proc` is not mounted (some containers), `O_PATH` alone cannot be opened
    again for reading: the path is resolved first and the file opened to be read."""
    monkeypatch.setattr(local, "_OPENED_AT", False)
    monkeypatch.setattr(local, "_PROC_FD", str(tmp_path / "no-proc"))
    (Path(archive.root) / "out").symlink_to(tmp_path)
    assert size(archive, "runs/42.dat") == 10_000
    assert read(archive, "runs/42.dat") == b"x" * 10_000
    for ask in (size, read):
        with pytest.raises(PermanentArchiveError, match="outside the archive folder"):
            ask(archive, "out/secret")
