"""The benchmark's lean tar reader hashes exactly what `tarfile` reads, however the tar's
bytes are cut into pieces: the benchmark's verdict on every download rests on it."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile

import pytest

from bench.tar_digests import TarDigests

FILES = {
    "top/a.bin": os.urandom(1000),
    "top/empty": b"",
    "top/one": b"x",
    "top/block": os.urandom(512),
    "top/block+1": os.urandom(513),
    "top/" + "long/" * 40 + "name.bin": os.urandom(3000),  # past ustar's 100 + 155
    "top/ünï/cödé.txt": b"non-ascii names come in a PAX header",
}


def made(tar_format: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tar_format) as tar:
        folder = tarfile.TarInfo("top")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for name, data in FILES.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def read(tar: bytes, piece: int) -> TarDigests:
    reader = TarDigests()
    for at in range(0, len(tar), piece):
        reader.feed(tar[at : at + piece])
    return reader


@pytest.mark.parametrize("tar_format", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
@pytest.mark.parametrize("piece", [1, 7, 512, 1000, 112 * 1024])
def test_every_member_is_hashed_whatever_the_pieces(tar_format: int, piece: int) -> None:
    reader = read(made(tar_format), piece)
    assert reader.ended
    assert reader.digests == {name: hashlib.sha1(data).hexdigest() for name, data in FILES.items()}


def test_a_tar_cut_short_has_not_ended_and_misses_its_last_member() -> None:
    tar = made(tarfile.PAX_FORMAT)
    reader = read(tar[: len(tar) // 2], 4096)
    assert not reader.ended
    assert len(reader.digests) < len(FILES)


def test_a_changed_byte_changes_that_members_digest_only() -> None:
    tar = bytearray(made(tarfile.PAX_FORMAT))
    at = bytes(tar).index(FILES["top/a.bin"])
    tar[at] ^= 0xFF
    reader = read(bytes(tar), 1000)
    expected = {name: hashlib.sha1(data).hexdigest() for name, data in FILES.items()}
    assert reader.digests["top/a.bin"] != expected.pop("top/a.bin")
    assert {name: reader.digests[name] for name in expected} == expected
