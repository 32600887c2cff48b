"""The real archive interface helper starts the server and stores files where we expect."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import pytest

from tests.support.archive_interface import ArchiveInterface, archive_interface_bin


@pytest.mark.archive
def test_real_archive_put_head_post_get(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    prefix = tmp_path / "archive"
    with ArchiveInterface(prefix, bin_dir=archive_interface_bin()) as archive:
        assert archive.url.startswith("http://127.0.0.1:")
        assert archive.url.endswith("/")
        stored = archive.put("123", data, mtime=1700000000.5)
        assert stored == prefix.resolve() / "123"
        assert stored.read_bytes() == data
        assert stat.S_IMODE(stored.stat().st_mode) == 0o444

        with httpx.Client(base_url=archive.url, timeout=10.0) as client:
            head = client.head("123")
            assert head.status_code == 204
            assert head.headers["X-Content-Length"] == str(len(data))
            assert float(head.headers["Last-Modified"]) == 1700000000.5
            assert head.headers["X-Pacifica-File-Storage-Media"] == "disk"
            assert head.headers["X-Pacifica-Messsage"] == "File was found"

            staged = client.post("123")
            assert staged.status_code == 200
            assert staged.json() == {"message": "File was staged", "file": "123"}

            got = client.get("123")
            assert got.status_code == 200
            assert got.headers["Transfer-Encoding"] == "chunked"
            assert got.content == data

            missing = client.get("999")
            assert missing.status_code == 500
            assert "traceback" in missing.json()

            # A second put of the same id replaces the read-only file.
            archive.put("123", b"second")
            assert client.get("123").content == b"second"
    assert not archive.url
