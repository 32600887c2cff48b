"""The original's CherryPy file (`--cpconfig`): its four keys that still mean something are
used, the others are warned about by name, and a flag beats the file beats the environment
beats cartd's INI file."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from cartd.errors import ConfigError
from cartd.observability.logs import ACCESS_LOGGER, log_to_files
from cartd.serving import read_cpconfig, server_settings

CPCONFIG = """\
[global]
server.socket_host = '0.0.0.0'
server.socket_port: 9090
log.access_file = "{folder}/access.log"
log.error_file = '{folder}/error.log'
server.thread_pool = 30
environment = 'production'

[/]
tools.gzip.on = True
"""


@pytest.fixture(autouse=True)
def _no_log_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No user files are read, and the log files a test opened are closed after it."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    yield
    log_to_files(None, None)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_the_four_keys_are_read_as_python_literals(tmp_path: Path) -> None:
    found = read_cpconfig(write(tmp_path / "cp.conf", CPCONFIG.format(folder=tmp_path)))
    assert found.values == {
        "socket_host": "0.0.0.0",
        "socket_port": 9090,
        "access_log_file": f"{tmp_path}/access.log",
        "error_log_file": f"{tmp_path}/error.log",
    }
    assert found.ignored == (
        "[global] server.thread_pool",
        "[global] environment",
        "[/] tools.gzip.on",
    )


@pytest.mark.parametrize(
    "line",
    [
        "server.socket_port = '8081'",  # a string where CherryPy wants a number
        "server.socket_port = True",
        "server.socket_host = 0.0.0.0",  # not a Python literal
        "server.socket_port = __import__('os').getpid()",  # code is never run
    ],
)
def test_a_honoured_key_of_the_wrong_type_stops_the_start_naming_it(
    tmp_path: Path, line: str
) -> None:
    path = write(tmp_path / "cp.conf", f"[global]\n{line}\n")
    with pytest.raises(ConfigError) as caught:
        read_cpconfig(path)
    key = line.split(" =", 1)[0]
    assert key in caught.value.message
    assert str(path) in caught.value.message


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read CherryPy config file"):
        read_cpconfig(tmp_path / "missing.conf")
    with pytest.raises(ConfigError, match="cannot read CherryPy config file"):
        read_cpconfig(write(tmp_path / "bad.conf", "server.socket_port = 1\n"))


def test_server_settings_take_the_file_and_warn_about_every_other_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "cp.conf", CPCONFIG.format(folder=tmp_path))
    # An in-process uvicorn of an earlier test (the fault archive's) leaves its access
    # logger at WARNING: the level is the server's to set, not what is under test here.
    with caplog.at_level(logging.INFO), caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        settings = server_settings(None, str(path), environ={})
        logging.getLogger(ACCESS_LOGGER).info(
            '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/cart1", "1.1", 200
        )
    assert (settings.socket_host, settings.socket_port) == ("0.0.0.0", 9090)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for key in ("[global] server.thread_pool", "[global] environment", "[/] tools.gzip.on"):
        assert any(key in w and "ignored" in w and str(path) in w for w in warnings), key
    assert any("--workers" in w for w in warnings if "thread_pool" in w)
    # The warnings come once the error file is open, so they are in it too.
    error_log = (tmp_path / "error.log").read_text()
    assert "server.thread_pool" in error_log
    assert "read the CherryPy config file" not in error_log  # INFO: not an error
    access_log = (tmp_path / "access.log").read_text().splitlines()
    assert len(access_log) == 1
    assert access_log[0].startswith("127.0.0.1 - - [")
    assert access_log[0].endswith('] "GET /cart1 HTTP/1.1" 200 -')
    # Requests go to their file alone, not to the log.
    assert not any("/cart1" in r.getMessage() for r in caplog.records)


def test_a_flag_beats_the_file_beats_the_environment_beats_the_ini(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ini = write(tmp_path / "cartd.ini", "[server]\nsocket_host = 10.0.0.1\nsocket_port = 7001\n")
    cp = write(tmp_path / "cp.conf", "[global]\nserver.socket_port = 7003\n")
    env = {"CARTD_SOCKET_PORT": "7002", "CARTD_SOCKET_HOST": "10.0.0.2"}

    only_ini = server_settings(ini, environ={})
    assert (only_ini.socket_host, only_ini.socket_port) == ("10.0.0.1", 7001)
    with_env = server_settings(ini, environ=env)
    assert (with_env.socket_host, with_env.socket_port) == ("10.0.0.2", 7002)
    with caplog.at_level(logging.WARNING):
        with_file = server_settings(ini, str(cp), environ=env)
    assert (with_file.socket_host, with_file.socket_port) == ("10.0.0.2", 7003)
    assert any(
        "server.socket_port" in r.getMessage() and "CherryPy file wins" in r.getMessage()
        for r in caplog.records
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        with_flags = server_settings(ini, str(cp), environ=env, address="::1", port=7004)
    assert (with_flags.socket_host, with_flags.socket_port) == ("::1", 7004)
    assert any("command line wins" in r.getMessage() for r in caplog.records)


def test_the_file_is_found_as_the_original_found_it(tmp_path: Path) -> None:
    named = write(tmp_path / "named.conf", "[global]\nserver.socket_port = 7010\n")
    assert server_settings(None, environ={"CARTD_CPCONFIG": str(named)}).socket_port == 7010
    default = tmp_path / "home" / ".pacifica-cartd" / "cpconfig.ini"
    default.parent.mkdir(parents=True)
    write(default, "[global]\nserver.socket_port = 7011\n")
    assert server_settings(None, environ={}).socket_port == 7011
    explicit = write(tmp_path / "x.conf", "[global]\nserver.socket_port = 7012\n")
    environ = {"CARTD_CPCONFIG": str(named)}
    assert server_settings(None, str(explicit), environ=environ).socket_port == 7012


def test_without_a_file_the_defaults_are_the_originals(tmp_path: Path) -> None:
    settings = server_settings(None, environ={})
    assert (settings.socket_host, settings.socket_port) == ("127.0.0.1", 8081)
    assert settings.access_log_file is None
    assert settings.error_log_file is None


def test_a_log_file_that_cannot_be_opened_names_the_keys(tmp_path: Path) -> None:
    env = {"CARTD_ERROR_LOG_FILE": str(tmp_path / "no" / "such" / "folder" / "e.log")}
    with pytest.raises(ConfigError, match=r"log\.error_file"):
        server_settings(None, environ=env)
