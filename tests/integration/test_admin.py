"""The operator's commands (API.md section 6), run as processes next to a running cartd:
dbsync, dbchk, fixit, stuck, dump, purge, and the original's `pacifica-cartd` and
`pacifica-cartd-cmd` names."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from cartd.db import migrate
from cartd.db.engine import database_url, make_engine
from tests.conftest import ServerFactory, entry, new_id, run_cartd
from tests.support.archive_interface import free_port
from tests.support.cartd_server import CartdServer, wait_for_cart, wait_until
from tests.support.fault_archive import FaultArchive, Faults
from tests.support.tars import tar_files

BIN = Path(sys.executable).parent
UP = {"message": "Pacifica Cartd Interface Up and Running"}


def admin_env(volume: Path, home: Path) -> dict[str, str]:
    """What an operator's shell would hold: the server's volume, a HOME without a config."""
    home.mkdir(parents=True, exist_ok=True)
    return {"HOME": str(home), "VOLUME_PATH": str(volume)}


def server_env(server: CartdServer, tmp_path: Path) -> dict[str, str]:
    return admin_env(server.workdir / "volume", tmp_path / "operator")


def succeeded(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def run_script(name: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run one of the installed commands (next to this Python, as in any virtualenv)."""
    script = BIN / name
    assert script.is_file(), f"{script} is not installed"
    return subprocess.run(
        [str(script), *args],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def order(server: CartdServer, uid: str, fileids: list[dict[str, Any]]) -> None:
    response = httpx.post(f"{server.url}/{uid}", json={"fileids": fileids}, timeout=30)
    assert response.status_code == 201, response.text


def ready_cart(
    server: CartdServer, archive: FaultArchive, uid: str, contents: dict[str, bytes]
) -> list[str]:
    """Order `contents` (path -> bytes) as cart `uid`, wait until ready; return the file ids."""
    fileids, ids = [], []
    for path, data in contents.items():
        file_id = new_id()
        archive.add(file_id, data)
        fileids.append(entry(file_id, data, path))
        ids.append(file_id)
    order(server, uid, fileids)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        head = wait_for_cart(client, uid)
    assert head.headers["X-Pacifica-Status"] == "ready", dict(head.headers)
    return ids


def dump_json(env: dict[str, str]) -> list[dict[str, Any]]:
    document: list[dict[str, Any]] = json.loads(succeeded(run_cartd("dump", "--json", env=env)))
    return document


def cart_in(document: list[dict[str, Any]], uid: str) -> dict[str, Any]:
    found = [cart for cart in document if cart["uid"] == uid]
    assert len(found) == 1, f"{uid} listed {len(found)} times in {document}"
    return found[0]


def words(output: str) -> str:
    """argparse wraps help text; compare with single spaces."""
    return " ".join(output.split())


# -- --help ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "says", "option"),
    [
        ("dbsync", "Create or upgrade the database schema", "--config"),
        ("dbchk", "Check the database schema", "--equal"),
        ("fixit", "Re-drive carts in error or still being made", "--cartid"),
        ("stuck", "List carts still being made (waiting, staging, bundling)", "--older-than"),
        ("dump", "List the live carts with their files and statuses", "--json"),
        ("purge", "Delete finished carts (ready or in error) not used since a time", "--time-ago"),
    ],
)
def test_help_of_each_admin_command_says_what_it_does(
    command: str, says: str, option: str, tmp_path: Path
) -> None:
    result = run_cartd(command, "--help", env={"HOME": str(tmp_path)})
    out = words(succeeded(result))
    assert says in out
    assert option in out
    assert f"cartd {command}" in out  # the usage line


# -- dbsync / dbchk -------------------------------------------------------------------------


def test_dbchk_on_a_new_volume_then_dbsync_makes_it_equal(tmp_path: Path) -> None:
    env = admin_env(tmp_path / "volume", tmp_path / "home")
    head = migrate.head_revision()
    assert head is not None
    assert "revision none" in succeeded(run_cartd("dbchk", env=env))  # upgradable
    assert run_cartd("dbchk", "--equal", env=env).returncode == 1

    assert f"revision {head}" in succeeded(run_cartd("dbsync", env=env))
    assert (tmp_path / "volume" / "cartd.sqlite3").is_file()
    assert f"revision {head}" in succeeded(run_cartd("dbchk", env=env))
    assert f"revision {head}" in succeeded(run_cartd("dbchk", "--equal", env=env))


def test_dbchk_equal_fails_on_an_older_schema_until_dbsync(tmp_path: Path) -> None:
    volume = tmp_path / "old-volume"
    engine = make_engine(database_url(None, volume))
    try:
        migrate.upgrade(engine, "0001")
        assert migrate.current_revision(engine) == "0001"
    finally:
        engine.dispose()
    env = admin_env(volume, tmp_path / "home")

    behind = run_cartd("dbchk", "--equal", env=env)
    assert behind.returncode == 1, behind.stdout + behind.stderr
    assert "revision 0001" in behind.stdout
    assert "Traceback" not in behind.stderr
    assert "revision 0001" in succeeded(run_cartd("dbchk", env=env))  # only looked, did not upgrade

    succeeded(run_cartd("dbsync", env=env))
    after = succeeded(run_cartd("dbchk", "--equal", env=env))
    assert f"revision {migrate.head_revision()}" in after


def test_dbchk_fails_on_a_schema_from_a_newer_cartd(tmp_path: Path) -> None:
    volume = tmp_path / "future"
    engine = make_engine(database_url(None, volume))
    try:
        migrate.upgrade(engine)
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    finally:
        engine.dispose()
    result = run_cartd("dbchk", env=admin_env(volume, tmp_path / "home"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "revision 9999" in result.stdout
    assert "Traceback" not in result.stderr


# -- fixit ----------------------------------------------------------------------------------


def test_fixit_redrives_a_failed_cart_that_the_running_server_then_completes(
    fault_archive: FaultArchive, cartd_factory: ServerFactory, tmp_path: Path
) -> None:
    server = cartd_factory(fault_archive.url)
    env = server_env(server, tmp_path)
    data = b"the archive was down, now it is back\n" * 300
    file_id = new_id()
    fault_archive.add(file_id, data, faults=Faults(fail_first=1000))
    uid = new_id("fix")
    order(server, uid, [entry(file_id, data, "run/1.dat", "sha256")])
    with httpx.Client(base_url=server.url, timeout=30) as client:
        failed = wait_for_cart(client, uid)
        assert failed.status_code == 500, dict(failed.headers)
        assert failed.headers["X-Pacifica-Status"] == "error"

        fault_archive.add(file_id, data)  # a good copy; its faults are gone
        fixed = succeeded(run_cartd("fixit", "--cartid", uid, env=env))
        assert f"cart {uid}: 1 files put back" in fixed

        head = wait_for_cart(client, uid, timeout=30)
        assert head.status_code == 204, dict(head.headers)
        assert head.headers["X-Pacifica-Status"] == "ready"
        download = client.get(f"/{uid}?filename=fixed.tar")
        assert download.status_code == 200
        assert tar_files(download.content) == {"fixed/run/1.dat": data}

    listed = cart_in(dump_json(env), uid)
    assert listed["status"] == "ready"
    assert listed["error"] is None
    assert [(f["status"], f["size"], f["error"]) for f in listed["files"]] == [
        ("staged", len(data), None)
    ]


def test_fixit_on_a_ready_cart_has_nothing_to_fix(
    fault_archive: FaultArchive, cartd_factory: ServerFactory, tmp_path: Path
) -> None:
    server = cartd_factory(fault_archive.url)
    env = server_env(server, tmp_path)
    uid = new_id("fine")
    (file_id,) = ready_cart(server, fault_archive, uid, {"a.txt": b"all good\n"})
    pulls = fault_archive.count("GET", file_id)

    out = succeeded(run_cartd("fixit", "--cartid", uid, env=env))
    assert f"cart {uid}: neither in error nor being made, nothing to fix" in out
    assert "put back" not in out
    head = httpx.head(f"{server.url}/{uid}")
    assert head.status_code == 204
    assert head.headers["X-Pacifica-Status"] == "ready"
    assert fault_archive.count("GET", file_id) == pulls

    mixed = run_cartd("fixit", "--cartid", "nosuchcart", uid, env=env)
    assert mixed.returncode == 1
    assert "nosuchcart" in mixed.stderr
    assert "Traceback" not in mixed.stderr
    assert f"cart {uid}: neither in error nor being made, nothing to fix" in mixed.stdout


#: A file on tape is asked about again only after an hour: the cart waits, legitimately.
SLOW_POLLS = {"CARTD_POLL_INITIAL": "3600", "CARTD_POLL_MAX": "3600"}


def file_status(env: dict[str, str], uid: str) -> str:
    carts = [cart for cart in dump_json(env) if cart["uid"] == uid]
    return str(carts[0]["files"][0]["status"]) if carts else "none"


def test_fixit_redrives_a_cart_waiting_on_tape_so_it_completes_at_once(
    fault_archive: FaultArchive, cartd_factory: ServerFactory, tmp_path: Path
) -> None:
    workdir = tmp_path / "tape-server"
    server = cartd_factory(fault_archive.url, workdir=workdir, **SLOW_POLLS)
    env = server_env(server, tmp_path)
    data = b"off tape half a second after it was asked for\n" * 100
    file_id = new_id()
    fault_archive.add(file_id, data, faults=Faults(tape_seconds=0.5))
    uid = new_id("tape")
    order(server, uid, [entry(file_id, data, "t/1.dat", "sha256")])
    # Asked to stage and found on tape: the next question is an hour away.
    wait_until(lambda: file_status(env, uid) == "staging")
    server.stop()

    fixed = succeeded(run_cartd("fixit", "--cartid", uid, env=env))
    assert f"cart {uid}: 1 files put back to be staged again (it was staging)" in fixed

    # Without fixit the restarted server would keep the hour's wait.
    restarted = cartd_factory(fault_archive.url, workdir=workdir, **SLOW_POLLS)
    with httpx.Client(base_url=restarted.url, timeout=30) as client:
        head = wait_for_cart(client, uid, timeout=30)
        assert head.headers["X-Pacifica-Status"] == "ready", dict(head.headers)
        download = client.get(f"/{uid}?filename=t.tar")
        assert download.status_code == 200
        assert tar_files(download.content) == {"t/t/1.dat": data}
    assert fault_archive.count("GET", file_id) == 1


def test_fixit_of_an_unknown_cart_exits_1_with_an_error_and_no_traceback(tmp_path: Path) -> None:
    result = run_cartd("fixit", "--cartid", "nosuchcart", env=admin_env(tmp_path / "v", tmp_path))
    assert result.returncode == 1
    assert "error" in result.stderr
    assert "nosuchcart" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


# -- stuck ----------------------------------------------------------------------------------


def test_stuck_lists_a_cart_without_progress_and_what_holds_it(
    fault_archive: FaultArchive, cartd_factory: ServerFactory, tmp_path: Path
) -> None:
    server = cartd_factory(fault_archive.url, **SLOW_POLLS)
    env = server_env(server, tmp_path)
    uid_ready = new_id("done")
    ready_cart(server, fault_archive, uid_ready, {"r.txt": b"made at once\n"})
    tape_id, tape_data = new_id(), b"on tape for good\n"
    fault_archive.add(tape_id, tape_data, faults=Faults(tape_seconds=3600))
    uid_tape = new_id("tape")
    order(server, uid_tape, [entry(tape_id, tape_data, "deep/t.txt")])
    wait_until(lambda: file_status(env, uid_tape) == "staging")

    # Polled a moment ago: not stuck for an hour, nor is a ready cart ever.
    calm = succeeded(run_cartd("stuck", env=env))
    assert "no cart is stuck" in calm
    assert uid_tape not in calm

    # Its next question is an hour away: after a second it has made no progress.
    listed: list[dict[str, Any]] = []

    def stuck_listed() -> bool:
        listed[:] = json.loads(
            succeeded(run_cartd("stuck", "--older-than", "1 second", "--json", env=env))
        )
        return bool(listed)

    wait_until(stuck_listed, timeout=30)
    assert [cart["uid"] for cart in listed] == [uid_tape]
    (cart,) = listed
    assert (cart["status"], cart["files_verified"], cart["files_total"]) == ("staging", 0, 1)
    assert [(f["id"], f["path"], f["status"], f["polls"]) for f in cart["holding"]] == [
        (tape_id, "deep/t.txt", "staging", 1)
    ]

    text = succeeded(run_cartd("stuck", "--older-than", "1 second", env=env))
    cart_line = next(line for line in text.splitlines() if line.startswith(uid_tape))
    assert "staging" in cart_line
    assert "files 0/1 verified" in cart_line
    assert "last progress" in cart_line
    file_line = next(line for line in text.splitlines() if tape_id in line)
    assert "deep/t.txt" in file_line
    assert "staging" in file_line
    assert uid_ready not in text
    assert "1 carts with no progress" in text


def test_stuck_with_a_bad_duration_says_so_without_a_traceback(tmp_path: Path) -> None:
    result = run_cartd(
        "stuck", "--older-than", "a while", env=admin_env(tmp_path / "volume", tmp_path / "home")
    )
    assert result.returncode == 2
    assert "cannot read 'a while' as a time" in result.stderr
    assert "Traceback" not in result.stderr


# -- dump -----------------------------------------------------------------------------------


def test_dump_lists_live_carts_with_their_files_and_the_legacy_alias_agrees(
    fault_archive: FaultArchive, cartd_factory: ServerFactory, tmp_path: Path
) -> None:
    server = cartd_factory(fault_archive.url)
    env = server_env(server, tmp_path)
    two = {"x/one.txt": b"one\n" * 10, "y/two.bin": bytes(range(256)) * 4}
    uid_two = new_id("two")
    ids_two = ready_cart(server, fault_archive, uid_two, two)
    uid_gone = new_id("gone")
    (id_gone,) = ready_cart(server, fault_archive, uid_gone, {"g.txt": b"soon gone\n"})
    bad_id = new_id()
    fault_archive.add(bad_id, b"never\n", faults=Faults(not_found=True))
    uid_bad = new_id("bad")
    order(server, uid_bad, [entry(bad_id, b"never\n", "bad.txt")])
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert wait_for_cart(client, uid_bad).status_code == 500
        assert client.delete(f"/{uid_gone}").status_code == 200

    document = dump_json(env)
    assert uid_gone not in {cart["uid"] for cart in document}
    listed = cart_in(document, uid_two)
    assert listed["status"] == "ready"
    assert listed["error"] is None
    assert isinstance(listed["id"], int)
    files = sorted(listed["files"], key=lambda f: f["path"])
    assert [{key: f[key] for key in ("id", "path", "status", "size")} for f in files] == [
        {"id": file_id, "path": path, "status": "staged", "size": len(data)}
        for file_id, (path, data) in zip(ids_two, two.items(), strict=True)
    ]
    failed = cart_in(document, uid_bad)
    assert failed["status"] == "error"
    assert failed["error"]
    assert [(f["id"], f["status"]) for f in failed["files"]] == [(bad_id, "error")]
    assert failed["files"][0]["error"]

    # the original's command name runs the same command on the same database
    legacy = run_script("pacifica-cartd-cmd", "dump", "--json", env=env)
    assert json.loads(succeeded(legacy)) == document

    plain = succeeded(run_cartd("dump", env=env))
    assert uid_gone not in plain
    assert id_gone not in plain
    lines = plain.splitlines()
    cart_line = next(line for line in lines if line.startswith(uid_two))
    assert "ready" in cart_line
    assert "files 2/2" in cart_line
    for file_id, (path, data) in zip(ids_two, two.items(), strict=True):
        file_line = next(line for line in lines if file_id in line)
        assert path in file_line
        assert "staged" in file_line
        assert str(len(data)) in file_line
    bad_line = next(line for line in lines if line.startswith(uid_bad))
    assert "error" in bad_line
    assert "files 0/1" in bad_line


# -- purge ----------------------------------------------------------------------------------


def test_purge_deletes_finished_carts_not_used_since_and_keeps_the_rest(
    fault_archive: FaultArchive, cartd_factory: ServerFactory, tmp_path: Path
) -> None:
    server = cartd_factory(fault_archive.url)
    env = server_env(server, tmp_path)
    uid_ready = new_id("old")
    ready_cart(server, fault_archive, uid_ready, {"r.txt": b"ready and idle\n"})
    tape_id, tape_data = new_id(), b"still on tape\n"
    fault_archive.add(tape_id, tape_data, faults=Faults(tape_seconds=60))
    uid_tape = new_id("tape")
    order(server, uid_tape, [entry(tape_id, tape_data, "t.txt")])
    wait_until(lambda: fault_archive.count("POST", tape_id) >= 1)  # asked to stage: in progress
    bad_id = new_id()
    fault_archive.add(bad_id, b"gone\n", faults=Faults(not_found=True))
    uid_bad = new_id("bad")
    order(server, uid_bad, [entry(bad_id, b"gone\n", "x.txt")])
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert wait_for_cart(client, uid_bad).status_code == 500

    ids = {cart["uid"]: cart["id"] for cart in dump_json(env)}
    ready_dir = server.workdir / "volume" / "carts" / str(ids[uid_ready])
    assert ready_dir.is_dir()

    kept = succeeded(run_cartd("purge", "--time-ago", "1 hour ago", env=env))
    assert "0 carts purged" in kept
    assert httpx.head(f"{server.url}/{uid_ready}").headers["X-Pacifica-Status"] == "ready"
    assert httpx.head(f"{server.url}/{uid_bad}").status_code == 500
    assert ready_dir.is_dir()

    purged = succeeded(run_cartd("purge", "--time-ago", "0 seconds ago", env=env))
    assert f"purged cart {uid_ready}" in purged
    assert f"purged cart {uid_bad}" in purged  # in error is finished too
    assert uid_tape not in purged
    assert "2 carts purged" in purged
    assert httpx.head(f"{server.url}/{uid_bad}").status_code == 404
    assert httpx.head(f"{server.url}/{uid_ready}").status_code == 404
    assert httpx.get(f"{server.url}/{uid_ready}").status_code == 404
    assert not ready_dir.exists()

    head = httpx.head(f"{server.url}/{uid_tape}")
    assert head.status_code == 204
    assert head.headers["X-Pacifica-Status"] == "staging"


@pytest.mark.parametrize("when", ["soonish", "1000000 days ago"])
def test_purge_with_a_bad_time_says_so_without_a_traceback(when: str, tmp_path: Path) -> None:
    env = admin_env(tmp_path / "volume", tmp_path / "home")
    result = run_cartd("purge", "--time-ago", when, env=env)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert f"cannot read {when!r} as a time" in result.stderr
    assert "days ago" in result.stderr
    assert "purged" not in result.stdout


# -- the original's command names ----------------------------------------------------------


def test_pacifica_cartd_serves_as_its_cherrypy_file_says(
    fault_archive: FaultArchive, tmp_path: Path
) -> None:
    """An operator's unchanged `pacifica-cartd --cpconfig server.conf`: the server listens on
    the file's port, writes one line per request to its access file and its warnings to
    its error file (a relative name, from the working folder, as CherryPy did), and warns
    about the key that means nothing any more."""
    script = BIN / "pacifica-cartd"
    assert script.is_file(), f"{script} is not installed"
    port = free_port()
    access = tmp_path / "logs" / "access.log"
    access.parent.mkdir()
    cpconfig = tmp_path / "server.conf"
    cpconfig.write_text(
        "[global]\n"
        "server.socket_host: '127.0.0.1'\n"
        f"server.socket_port: {port}\n"
        f"log.access_file: '{access}'\n"
        "log.error_file = 'error.log'\n"
        "server.thread_pool = 30\n"
    )
    volume = tmp_path / "legacy-volume"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "VOLUME_PATH": str(volume),
        "ARCHIVE_INTERFACE_URL": fault_archive.url,
    }
    log_path = tmp_path / "legacy.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(script), "--cpconfig", str(cpconfig)],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        answers: list[httpx.Response] = []

        def up() -> bool:
            assert process.poll() is None, f"exited at start:\n{log_path.read_text()}"
            with contextlib.suppress(httpx.TransportError):
                answers[:] = [httpx.get(f"http://127.0.0.1:{port}/", timeout=1.0)]
                return True
            return False

        wait_until(up, timeout=30)
        assert answers[0].status_code == 200
        assert answers[0].json() == UP
        assert httpx.head(f"http://127.0.0.1:{port}/nocart").status_code == 404
        assert (volume / "cartd.sqlite3").is_file()
        wait_until(lambda: len(access.read_text().splitlines()) >= 2, timeout=10)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
    logged = log_path.read_text(errors="replace")
    assert "Traceback" not in logged
    lines = access.read_text().splitlines()
    assert lines[0].startswith("127.0.0.1 - - [")
    assert lines[0].endswith('"GET / HTTP/1.1" 200 -')
    assert lines[1].endswith('"HEAD /nocart HTTP/1.1" 404 -')
    assert "GET / HTTP/1.1" not in logged, "requests go to the access file alone"
    for where in (logged, (tmp_path / "error.log").read_text()):
        warning = next((line for line in where.splitlines() if "thread_pool" in line), "")
        assert "WARNING" in warning, where
        assert "[global] server.thread_pool" in warning
        assert "ignored" in warning


def test_pacifica_cartd_cmd_help_lists_the_admin_commands(tmp_path: Path) -> None:
    out = succeeded(run_script("pacifica-cartd-cmd", "--help", env={"HOME": str(tmp_path)}))
    for command in ("dbsync", "dbchk", "fixit", "dump", "purge"):
        assert command in out
