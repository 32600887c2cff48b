"""Settings from the original's INI keys and environment variables (API.md section 5)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from cartd.config import load_settings, parse_size
from cartd.errors import ConfigError

FULL_INI = """\
[cartd]
volume_path = {volume}
lru_buffer_time = 3600
lru_purge = off
bundle_task = on
transfer_size = 1 Mb
volume_size_limit = 500 Mb

[archiveinterface]
url = http://archive.example:8080/base

[celery]
broker_url = redis://broker:6379/0

[database]
peewee_url = sqliteext:///db.sqlite3
connect_attempts = 3
connect_wait = 2.5
debug_logging = True
"""


@pytest.fixture(autouse=True)
def empty_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME without ~/.pacifica-cartd/config.ini, so only what a test writes is read."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv("CARTD_CONFIG", raising=False)
    return home


def write_ini(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def full_ini(tmp_path: Path) -> Path:
    return write_ini(tmp_path / "cartd.ini", FULL_INI.format(volume=tmp_path / "vol"))


# parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4096", 4096),
        ("0", 0),
        # The original's own units, with its case rule: B counts in 1000s, b in 1024s.
        ("4 MB", 4_000_000),
        ("4 Mb", 4 * 1024**2),
        ("1 KB", 1000),
        ("1 Kb", 1024),
        ("2 GB", 2_000_000_000),
        ("2 Gb", 2 * 1024**3),
        ("1 TB", 10**12),
        ("1 Tb", 1024**4),
        ("8 B", 8),
        ("  8 b  ", 8),
        ("1.5 Kb", 1536),
        ("1.5 KB", 1500),
        # Beyond the original: either case of prefix, no space, P, and the IEC units.
        ("4MB", 4_000_000),
        ("4mb", 4 * 1024**2),
        ("1 kB", 1000),
        ("1 kb", 1024),
        ("1 PB", 10**15),
        ("10 GiB", 10 * 1024**3),
        ("4 MiB", 4 * 1024**2),
        ("4 mib", 4 * 1024**2),
        ("1 KiB", 1024),
        (4096, 4096),
    ],
)
def test_parse_size_accepts_bytes_and_units(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text", ["", "lots", "Mb", "-1", "4 Xb", "4 Mb extra", "1,000", "4 M", "4k", "4 iB"]
)
def test_parse_size_refuses_bad_text(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


# load_settings: defaults


def test_defaults_without_any_file_or_environment(empty_home: Path) -> None:
    settings = load_settings(None, environ={})
    assert settings.lru_buffer_time == 0
    assert settings.lru_purge is True
    assert settings.bundle_task is False
    assert settings.transfer_size == 1024 * 1024
    assert settings.volume_size_limit is None
    assert settings.archive_url == "http://127.0.0.1:8080/"
    assert settings.broker_url is None
    assert settings.backend_url is None
    assert settings.database_url is None
    assert settings.database_connect_attempts == 10
    assert settings.database_connect_wait == 20
    assert settings.database_debug_logging is False
    assert settings.volume_path.is_absolute()
    assert settings.volume_path.is_relative_to(empty_home)


def test_default_ini_in_home_is_read(empty_home: Path) -> None:
    folder = empty_home / ".pacifica-cartd"
    folder.mkdir()
    write_ini(folder / "config.ini", "[cartd]\nlru_buffer_time = 42\n")
    assert load_settings(None, environ={}).lru_buffer_time == 42


# load_settings: the INI file


def test_ini_file_keys_are_read(tmp_path: Path) -> None:
    settings = load_settings(full_ini(tmp_path), environ={})
    assert settings.volume_path == tmp_path / "vol"
    assert settings.lru_buffer_time == 3600
    assert settings.lru_purge is False
    assert settings.bundle_task is True
    assert settings.transfer_size == 1024**2  # `1 Mb`, as the original reads it
    assert settings.volume_size_limit == 500 * 1024**2
    assert settings.archive_url == "http://archive.example:8080/base/"
    assert settings.broker_url == "redis://broker:6379/0"
    assert settings.database_url == "sqliteext:///db.sqlite3"
    assert settings.database_connect_attempts == 3
    assert settings.database_connect_wait == 2.5
    assert settings.database_debug_logging is True


def test_ini_file_without_sections_of_interest_gives_defaults(tmp_path: Path) -> None:
    ini = write_ini(tmp_path / "other.ini", "[unrelated]\nkey = value\n")
    settings = load_settings(ini, environ={})
    assert settings.transfer_size == 1024 * 1024
    assert settings.lru_purge is True


def test_volume_size_limit_in_binary_units(tmp_path: Path) -> None:
    ini = write_ini(tmp_path / "c.ini", "[cartd]\nvolume_size_limit = 10 GiB\n")
    assert load_settings(ini, environ={}).volume_size_limit == 10 * 1024**3


def test_max_order_size_defaults_to_32_mib_and_takes_units(
    empty_home: Path, tmp_path: Path
) -> None:
    assert load_settings(None, environ={}).max_order_size == 32 * 1024**2
    ini = write_ini(tmp_path / "c.ini", "[cartd]\nmax_order_size = 1 GiB\n")
    assert load_settings(ini, environ={}).max_order_size == 1024**3
    environ = {"CARTD_MAX_ORDER_SIZE": "65536"}
    assert load_settings(ini, environ=environ).max_order_size == 65536


def test_max_order_size_must_be_a_size(empty_home: Path) -> None:
    with pytest.raises(ConfigError, match=r"cartd\.max_order_size \(CARTD_MAX_ORDER_SIZE\)"):
        load_settings(None, environ={"CARTD_MAX_ORDER_SIZE": "lots"})


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://archive:8080", "http://archive:8080/"),
        ("https://archive/prefix", "https://archive/prefix/"),
        ("http://archive:8080/", "http://archive:8080/"),
    ],
)
def test_http_archive_url_gets_trailing_slash(tmp_path: Path, url: str, expected: str) -> None:
    ini = write_ini(tmp_path / "c.ini", f"[archiveinterface]\nurl = {url}\n")
    assert load_settings(ini, environ={}).archive_url == expected


def test_file_archive_url_is_accepted(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/archive"
    settings = load_settings(None, environ={"ARCHIVE_INTERFACE_URL": url})
    assert settings.archive_url == url


# load_settings: the environment


def test_environment_alone_sets_keys() -> None:
    settings = load_settings(
        None,
        environ={
            "LRU_BUFFER_TIME": "5",
            "LRU_PURGE": "off",
            "BUNDLE_TASK": "on",
            "TRANSFER_SIZE": "64 KiB",
            "VOLUME_SIZE_LIMIT": "2 Gb",
            "BROKER_URL": "amqp://x",
            "BACKEND_URL": "rpc://",
            "PEEWEE_URL": "mysql://u:p@h/db",
            "DATABASE_CONNECT_ATTEMPTS": "7",
            "DATABASE_CONNECT_WAIT": "0",
            "DATABASE_DEBUG_LOGGING": "true",
        },
    )
    assert settings.lru_buffer_time == 5
    assert settings.lru_purge is False
    assert settings.bundle_task is True
    assert settings.transfer_size == 64 * 1024
    assert settings.volume_size_limit == 2 * 1024**3
    assert settings.broker_url == "amqp://x"
    assert settings.backend_url == "rpc://"
    assert settings.database_url == "mysql://u:p@h/db"
    assert settings.database_connect_attempts == 7
    assert settings.database_connect_wait == 0
    assert settings.database_debug_logging is True


def test_older_environment_names_are_read_as_aliases() -> None:
    settings = load_settings(None, environ={"DATABASE_LOGGING": "true", "DATABASE_WAIT": "3"})
    assert settings.database_debug_logging is True
    assert settings.database_connect_wait == 3


def test_the_current_environment_name_wins_over_its_older_alias(
    caplog: pytest.LogCaptureFixture,
) -> None:
    environ = {"DATABASE_CONNECT_WAIT": "5", "DATABASE_WAIT": "3", "DATABASE_LOGGING": "true"}
    with caplog.at_level(logging.WARNING, logger="cartd.config"):
        settings = load_settings(None, environ=environ)
    assert settings.database_connect_wait == 5
    assert settings.database_debug_logging is True
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("DATABASE_CONNECT_WAIT" in w and "DATABASE_WAIT" in w for w in warnings)


def test_an_alias_in_the_environment_overrides_the_ini_file(tmp_path: Path) -> None:
    ini = write_ini(tmp_path / "c.ini", "[database]\nconnect_wait = 9\n")
    assert load_settings(ini, environ={"DATABASE_WAIT": "1"}).database_connect_wait == 1


def test_environment_overrides_ini_and_warns_naming_the_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env_volume = tmp_path / "env-vol"
    environ = {
        "VOLUME_PATH": str(env_volume),
        "LRU_PURGE": "on",
        "ARCHIVE_INTERFACE_URL": "http://other:9000",
        "PEEWEE_URL": "postgres://u:p@db/cart",
    }
    with caplog.at_level(logging.WARNING, logger="cartd.config"):
        settings = load_settings(full_ini(tmp_path), environ=environ)
    assert settings.volume_path == env_volume
    assert settings.lru_purge is True
    assert settings.archive_url == "http://other:9000/"
    assert settings.database_url == "postgres://u:p@db/cart"
    # Keys only in the file keep the file's value.
    assert settings.bundle_task is True
    assert settings.transfer_size == 1024**2

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for name, env in [
        ("cartd.volume_path", "VOLUME_PATH"),
        ("cartd.lru_purge", "LRU_PURGE"),
        ("archiveinterface.url", "ARCHIVE_INTERFACE_URL"),
        ("database.peewee_url", "PEEWEE_URL"),
    ]:
        assert any(name in w and env in w for w in warnings), (name, warnings)
    # A key set only in the file is not warned about.
    assert not any("cartd.bundle_task" in w for w in warnings)


def test_environment_without_ini_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="cartd.config"):
        load_settings(None, environ={"LRU_PURGE": "off"})
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_cartd_config_environment_selects_the_file(tmp_path: Path) -> None:
    ini = write_ini(tmp_path / "chosen.ini", "[cartd]\nlru_buffer_time = 77\n")
    assert load_settings(None, environ={"CARTD_CONFIG": str(ini)}).lru_buffer_time == 77


def test_explicit_path_wins_over_cartd_config(tmp_path: Path) -> None:
    chosen = write_ini(tmp_path / "chosen.ini", "[cartd]\nlru_buffer_time = 1\n")
    other = write_ini(tmp_path / "other.ini", "[cartd]\nlru_buffer_time = 2\n")
    settings = load_settings(chosen, environ={"CARTD_CONFIG": str(other)})
    assert settings.lru_buffer_time == 1


def test_cartd_config_wins_over_default_ini(tmp_path: Path, empty_home: Path) -> None:
    folder = empty_home / ".pacifica-cartd"
    folder.mkdir()
    write_ini(folder / "config.ini", "[cartd]\nlru_buffer_time = 1\n")
    chosen = write_ini(tmp_path / "chosen.ini", "[cartd]\nlru_buffer_time = 2\n")
    assert load_settings(None, environ={"CARTD_CONFIG": str(chosen)}).lru_buffer_time == 2


# load_settings: errors


def test_missing_explicit_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.ini"
    with pytest.raises(ConfigError, match=re.escape("nope.ini")):
        load_settings(missing, environ={})


def test_missing_cartd_config_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "absent.ini"
    with pytest.raises(ConfigError, match=re.escape("absent.ini")):
        load_settings(None, environ={"CARTD_CONFIG": str(missing)})


def test_unparsable_ini_is_a_config_error(tmp_path: Path) -> None:
    ini = write_ini(tmp_path / "broken.ini", "this is not an ini file\n")
    with pytest.raises(ConfigError, match=re.escape("broken.ini")):
        load_settings(ini, environ={})


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("cartd", "lru_buffer_time", "abc"),
        ("cartd", "lru_buffer_time", "-1"),
        ("cartd", "lru_purge", "maybe"),
        ("cartd", "bundle_task", "perhaps"),
        ("cartd", "transfer_size", "lots"),
        ("cartd", "transfer_size", "1 kb"),
        ("cartd", "volume_size_limit", "big"),
        ("archiveinterface", "url", "ftp://x"),
        ("archiveinterface", "url", "archive:8080"),
        ("database", "connect_attempts", "0"),
        ("database", "connect_attempts", "many"),
        ("database", "connect_wait", "soon"),
        ("database", "debug_logging", "loud"),
    ],
)
def test_wrong_ini_value_names_the_key(tmp_path: Path, section: str, key: str, value: str) -> None:
    ini = write_ini(tmp_path / "c.ini", f"[{section}]\n{key} = {value}\n")
    with pytest.raises(ConfigError, match=rf"{section}\.{key}\b"):
        load_settings(ini, environ={})


def test_wrong_environment_value_names_the_key_and_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ={"LRU_BUFFER_TIME": "abc"})
    assert "cartd.lru_buffer_time" in caught.value.message
    assert "LRU_BUFFER_TIME" in caught.value.message


def test_several_wrong_values_are_all_named(tmp_path: Path) -> None:
    ini = write_ini(
        tmp_path / "c.ini",
        "[cartd]\nlru_buffer_time = abc\ntransfer_size = lots\n[archiveinterface]\nurl = ftp://x\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(ini, environ={})
    message = caught.value.message
    assert "cartd.lru_buffer_time" in message
    assert "cartd.transfer_size" in message
    assert "archiveinterface.url" in message


def test_binary_marker_needs_a_prefix() -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size("4 i")


def test_a_workers_metrics_endpoint_is_off_unless_a_port_is_given() -> None:
    assert load_settings(None, environ={}).metrics_port == 0
    assert load_settings(None, environ={"CARTD_METRICS_PORT": ""}).metrics_port == 0
    given = load_settings(
        None, environ={"CARTD_METRICS_PORT": "9101", "CARTD_METRICS_ADDRESS": "0.0.0.0"}
    )
    assert (given.metrics_address, given.metrics_port) == ("0.0.0.0", 9101)
    assert load_settings(None, environ={}).metrics_address == "127.0.0.1"
    with pytest.raises(ConfigError, match=r"cartd.metrics_port \(CARTD_METRICS_PORT\)"):
        load_settings(None, environ={"CARTD_METRICS_PORT": "70000"})
