"""The settings of a process that serves HTTP, as the original's server command took them.

Pacifica Cartd 0.7.0 was a CherryPy application: `pacifica-cartd --cpconfig FILE` (else
`$CARTD_CPCONFIG`, else `~/.pacifica-cartd/cpconfig.ini`) named a CherryPy config file, an
INI file whose `[global]` section holds Python literals such as
`server.socket_port = 8081`. cartd takes from it the four keys that still mean something:

    server.socket_host   the address to listen on        (cartd: server.socket_host)
    server.socket_port   the port                        (cartd: server.socket_port)
    log.access_file      one line per request            (cartd: log.access_file)
    log.error_file       the warnings and errors         (cartd: log.error_file)

and warns, naming it, about every other key. Where a setting is given in several places,
the most specific wins: a command-line flag (`-a`, `-p`), then the CherryPy file, then
the environment, then cartd's INI file, then the default.
"""

from __future__ import annotations

import ast
import configparser
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cartd.config import KEYS_BY_FIELD, Settings, load_settings
from cartd.errors import ConfigError
from cartd.observability.logs import log_to_files

log = logging.getLogger("cartd")

#: The environment variable the original read for the CherryPy file, and its default.
CPCONFIG_ENV = "CARTD_CPCONFIG"
DEFAULT_CPCONFIG_PATH = Path("~/.pacifica-cartd/cpconfig.ini")

#: CherryPy's keys that cartd honours: each one's settings field and the type of its value.
HONOURED: dict[str, tuple[str, type]] = {
    "server.socket_host": ("socket_host", str),
    "server.socket_port": ("socket_port", int),
    "log.access_file": ("access_log_file", str),
    "log.error_file": ("error_log_file", str),
}

#: What to do instead, for CherryPy keys an operator is likely to have set.
HINTS = {
    "server.thread_pool": "an ASGI server serves many requests at once; for more"
    " processes use `cartd serve --workers N`",
    "log.screen": "cartd always logs to stderr",
    "request.show_tracebacks": "cartd never sends a traceback",
}


@dataclass(frozen=True)
class CherryPyFile:
    """What a CherryPy config file says that cartd can use, and what it cannot."""

    path: Path
    values: dict[str, Any]  # settings field -> value
    ignored: tuple[str, ...]  # `[section] key` of every other key


def cpconfig_path_from(explicit: str | None, environ: Mapping[str, str]) -> Path | None:
    """The CherryPy file to read: the one named, else `$CARTD_CPCONFIG`, else the
    original's default when it exists (a missing default is no error, as for CherryPy)."""
    if explicit:
        return Path(explicit).expanduser()
    if environ.get(CPCONFIG_ENV):
        return Path(environ[CPCONFIG_ENV]).expanduser()
    default = DEFAULT_CPCONFIG_PATH.expanduser()
    return default if default.is_file() else None


def read_cpconfig(path: Path) -> CherryPyFile:
    """The honoured keys of a CherryPy file's `[global]` section, each value read as a
    Python literal (never evaluated as code), and the keys it ignores. Raises ConfigError
    for a file that cannot be read and a honoured key whose value is not of its type."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # CherryPy keeps case
    try:
        with path.open(encoding="utf-8") as handle:
            parser.read_file(handle)
    except (OSError, configparser.Error) as exc:
        raise ConfigError(f"cannot read CherryPy config file {path}: {exc}") from exc
    values: dict[str, Any] = {}
    ignored: list[str] = []
    for section in parser.sections():
        for key, text in parser.items(section, raw=True):
            if section != "global" or key not in HONOURED:
                ignored.append(f"[{section}] {key}")
                continue
            field, kind = HONOURED[key]
            try:
                value = ast.literal_eval(text.strip())
            except (ValueError, SyntaxError):
                value = None
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ConfigError(
                    f"CherryPy config file {path}: {key} = {text.strip()} is not a"
                    f" {'number' if kind is int else 'quoted string'}"
                )
            values[field] = value
    return CherryPyFile(path, values, tuple(ignored))


def server_settings(
    config: str | os.PathLike[str] | None,
    cpconfig: str | None = None,
    *,
    log_format: str = "text",
    environ: Mapping[str, str] | None = None,
    address: str | None = None,
    port: int | None = None,
) -> Settings:
    """The settings of an HTTP server process, its log files opened.

    `address` and `port` are the command line's `-a` and `-p` when given. The CherryPy
    file's ignored keys are warned about once the error log file is open, so that the
    warning is found there too.
    """
    env = os.environ if environ is None else environ
    path = cpconfig_path_from(cpconfig, env)
    cherrypy = read_cpconfig(path) if path is not None else None
    overrides: dict[str, Any] = dict(cherrypy.values) if cherrypy else {}
    flags = {
        field: value
        for field, value in (("socket_host", address), ("socket_port", port))
        if value is not None
    }
    if cherrypy:
        _say_who_wins(cherrypy, flags, env)
    settings = load_settings(config, env, **{**overrides, **flags})
    try:
        log_to_files(settings.access_log_file, settings.error_log_file, log_format)
    except OSError as exc:
        raise ConfigError(f"log.access_file / log.error_file: cannot open: {exc}") from None
    if cherrypy:
        log.info("read the CherryPy config file %s", cherrypy.path)
        for name in cherrypy.ignored:
            key = name.split("] ", 1)[1]
            hint = HINTS.get(key, "cartd is not a CherryPy application")
            log.warning(
                "CherryPy config file %s: %s has no meaning in cartd and is ignored (%s)",
                cherrypy.path,
                name,
                hint,
            )
    return settings


def _say_who_wins(cherrypy: CherryPyFile, flags: Mapping[str, Any], env: Mapping[str, str]) -> None:
    """Warn where the CherryPy file and a flag or the environment disagree."""
    for field, value in cherrypy.values.items():
        key = KEYS_BY_FIELD[field]
        if field in flags and flags[field] != value:
            log.warning(
                "%s is %r in %s but the command line says %r; the command line wins"
                " (the original let the file win)",
                key.name,
                value,
                cherrypy.path,
                flags[field],
            )
        elif key.env in env and env[key.env] != str(value):
            log.warning(
                "%s is %r in %s and %r in the environment as %s; the CherryPy file wins",
                key.name,
                value,
                cherrypy.path,
                env[key.env],
                key.env,
            )
