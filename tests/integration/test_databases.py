"""The API on PostgreSQL and MariaDB (the real servers on this machine), not only SQLite,
configured with the original's peewee URL forms and set up with `cartd dbsync`."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerFactory, new_id, run_cartd, scratch_database
from tests.support.archive_interface import ArchiveInterface
from tests.support.cartd_server import wait_for_cart

pytestmark = pytest.mark.archive


@pytest.fixture(
    params=[
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def peewee_url(request: pytest.FixtureRequest) -> Iterator[str]:
    with scratch_database(request.param) as url:
        yield url


def test_api_on_a_database_server(
    peewee_url: str,
    archive_interface: ArchiveInterface,
    cartd_factory: ServerFactory,
    tmp_path: Path,
) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PEEWEE_URL": peewee_url,
        "VOLUME_PATH": str(tmp_path / "vol"),
    }
    refused = run_cartd("serve", "-p", "1", env=env)
    assert refused.returncode == 2
    assert "cartd dbsync" in refused.stderr
    assert "Traceback" not in refused.stderr

    synced = run_cartd("dbsync", env=env)
    assert synced.returncode == 0, synced.stderr
    assert run_cartd("dbsync", env=env).returncode == 0, "dbsync is idempotent"

    server = cartd_factory(archive_interface.url, PEEWEE_URL=peewee_url)
    data = {"a/one.txt": b"one" * 1000, "b/two.txt": b"two"}
    fileids = []
    for path, content in data.items():
        file_id = new_id()
        archive_interface.put(file_id, content)
        fileids.append(
            {
                "id": file_id,
                "path": path,
                "hashtype": "sha256",
                "hashsum": hashlib.sha256(content).hexdigest(),
            }
        )
    uid = new_id("db")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post(f"/{uid}", json={"fileids": fileids}).status_code == 201
        head = wait_for_cart(client, uid)
        assert head.status_code == 204
        assert head.headers["X-Pacifica-Status"] == "ready"
        assert head.headers["X-Pacifica-Files-Staged"] == "2"
        assert head.headers["X-Pacifica-Bytes-Staged"] == str(sum(map(len, data.values())))
        response = client.get(f"/{uid}?filename=d.tar")
        assert response.status_code == 200
        with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
            got = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
        assert got == {f"d/{path}": content for path, content in data.items()}

        broken = new_id("broken")
        missing = [{"id": new_id("nope"), "path": "x", "hashtype": "md5", "hashsum": "0" * 32}]
        client.post(f"/{broken}", json={"fileids": missing})
        assert wait_for_cart(client, broken).status_code == 500

        assert client.post(f"/{uid}", json={"fileids": fileids[1:]}).status_code == 201
        assert wait_for_cart(client, uid).headers["X-Pacifica-Files-Total"] == "1"
        assert client.delete(f"/{uid}").status_code == 200
        assert client.head(f"/{uid}").status_code == 404
        assert client.get(f"/{uid}").status_code == 404
        assert client.post("/bad..", content=b"[]").status_code == 400
