"""The original's own client, pacifica-downloader 0.4.1, unchanged, against cartd."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import new_id
from tests.support.archive_interface import ArchiveInterface
from tests.support.cartd_server import CartdServer
from tests.support.venvs import REQUIREMENTS_DIR, ensure_venv

pytestmark = [pytest.mark.archive, pytest.mark.downloader]

# Runs inside the downloader's own virtualenv: create a cart, wait for it, download it.
SCRIPT = """
import json, sys
from pacifica.downloader import Downloader
url, location, transinfo = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
Downloader(cart_api_url=url).transactioninfo(location, transinfo, timeout=60)
"""


def test_pacifica_downloader_gets_a_cart(
    ai_server: CartdServer, archive_interface: ArchiveInterface, tmp_path: Path
) -> None:
    import hashlib

    wanted = {
        ("raw", "run1.dat"): bytes(range(256)) * 1000,
        ("raw/deep", "run2.dat"): b"second run\n" * 100,
        ("", "README"): b"read me\n",
    }
    files = {}
    for (subdir, name), data in wanted.items():
        file_id = new_id()
        archive_interface.put(file_id, data)
        files[file_id] = {
            "subdir": subdir,
            "name": name,
            "hashtype": "sha1",
            "hashsum": hashlib.sha1(data).hexdigest(),
        }
    bin_dir = ensure_venv("downloader", REQUIREMENTS_DIR / "downloader.txt")
    location = tmp_path / "download"
    location.mkdir()
    result = subprocess.run(
        [
            str(bin_dir / "python"),
            "-c",
            SCRIPT,
            ai_server.url,
            str(location),
            json.dumps({"files": files}),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for (subdir, name), data in wanted.items():
        path = location / "data" / subdir / name
        assert path.read_bytes() == data
    got = sorted(str(p.relative_to(location)) for p in location.rglob("*") if p.is_file())
    assert got == ["data/README", "data/raw/deep/run2.dat", "data/raw/run1.dat"]
