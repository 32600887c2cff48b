"""The `cartd` command as a newcomer and an operator meet it."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import httpx

from tests.conftest import ServerFactory, run_cartd
from tests.support.cartd_server import CartdServer, wait_for_cart, wait_until


def test_help_lists_the_commands() -> None:
    result = run_cartd("--help", env={})
    assert result.returncode == 0
    assert "serve" in result.stdout
    assert "dbsync" in result.stdout
    serve = run_cartd("serve", "--help", env={})
    assert "--port" in serve.stdout
    assert "--config" in serve.stdout


def test_wrong_setting_stops_the_start_naming_the_key(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "LRU_BUFFER_TIME": "soon", "VOLUME_PATH": str(tmp_path)}
    result = run_cartd("serve", "-p", "1", env=env)
    assert result.returncode == 2
    assert "cartd.lru_buffer_time (LRU_BUFFER_TIME)" in result.stderr
    assert "Traceback" not in result.stderr


def test_wrong_value_in_the_ini_file_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "cartd.ini"
    config.write_text("[archiveinterface]\nurl = ftp://nowhere/\n")
    result = run_cartd("dbsync", "-c", str(config), env={"HOME": str(tmp_path)})
    assert result.returncode == 2
    assert "archiveinterface.url" in result.stderr


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    result = run_cartd("serve", "-c", str(tmp_path / "nope.ini"), env={"HOME": str(tmp_path)})
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_serve_with_a_local_folder_archive(cartd_factory: ServerFactory, tmp_path: Path) -> None:
    """The newcomer's first command: no archive service, just a folder of files."""
    folder = tmp_path / "archive"
    (folder / "runs").mkdir(parents=True)
    data = b"measurement\n" * 1000
    (folder / "runs" / "42.dat").write_bytes(data)
    server = cartd_factory(f"file://{folder}")
    fileids = [
        {
            "id": "runs/42.dat",
            "path": "out/42.dat",
            "hashtype": "blake2b",
            "hashsum": hashlib.blake2b(data).hexdigest(),
        },
    ]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post("/first", json={"fileids": fileids}).status_code == 201
        assert wait_for_cart(client, "first").headers["X-Pacifica-Status"] == "ready"
        body = client.get("/first?filename=x").content
        with tarfile.open(fileobj=io.BytesIO(body)) as tar:
            member = tar.extractfile("x/out/42.dat")
            assert member is not None
            assert member.read() == data

        verified = [line for line in server.log().splitlines() if "verified" in line]
        assert verified, "each verified file is logged"
        assert all("cart=first" in line and "file=runs/42.dat" in line for line in verified)

        outside = [{"id": "../../etc/passwd", "path": "p", "hashtype": "md5", "hashsum": "0" * 32}]
        refused = client.post("/escape", json={"fileids": outside})
        assert refused.status_code == 400
        assert "fileids[0].id" in refused.json()["message"]
        assert client.head("/escape").status_code == 404

        # An id that leaves the folder only on disk (a link) is stopped by the archive.
        (folder / "runs" / "link").symlink_to(tmp_path)
        linked = [{"id": "runs/link/x", "path": "p", "hashtype": "md5", "hashsum": "0" * 32}]
        assert client.post("/linked", json={"fileids": linked}).status_code == 201
        head = wait_for_cart(client, "linked")
        assert head.status_code == 500
        assert "outside the archive folder" in head.headers["X-Pacifica-Message"]


def test_serve_takes_the_cherrypy_file_under_its_own_flags(tmp_path: Path) -> None:
    """`cartd serve --cpconfig`: `-p` beats the file's port (with a warning saying so), the
    file's access log is written, and the environment adds an error log the file lacks."""
    folder = tmp_path / "archive"
    folder.mkdir()
    cpconfig = tmp_path / "server.conf"
    cpconfig.write_text(
        "[global]\n"
        "server.socket_port = 1\n"  # a port no test can have: the -p flag must win
        f"log.access_file = '{tmp_path / 'access.log'}'\n"
        "request.show_tracebacks = False\n"
    )
    env = {
        "ARCHIVE_INTERFACE_URL": f"file://{folder}",
        "VOLUME_PATH": str(tmp_path / "volume"),
        "CARTD_ERROR_LOG_FILE": str(tmp_path / "error.log"),
    }
    server = CartdServer(tmp_path / "serve", env, args=["--cpconfig", str(cpconfig)]).start()
    try:
        assert httpx.get(f"{server.url}/nocart").status_code == 404
        wait_until(lambda: "/nocart" in (tmp_path / "access.log").read_text())
    finally:
        server.stop()
    logged = server.log()
    assert "server.socket_port is 1 in" in logged
    assert "the command line wins" in logged
    errors = (tmp_path / "error.log").read_text()
    assert "[global] request.show_tracebacks" in errors
    assert "cartd never sends a traceback" in errors
    assert "INFO" not in errors
    assert '"GET /nocart HTTP/1.1" 404 -' in (tmp_path / "access.log").read_text()
