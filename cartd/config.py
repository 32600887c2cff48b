"""The one typed settings object, read from the original's INI file and environment.

Pacifica Cartd's keys and environment variables are kept as they were (API.md
section 5). Unlike the original, the environment overrides the INI file, and a
key set in both places is reported so a deployment learns which value won.
"""

from __future__ import annotations

import configparser
import ipaddress
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from cartd.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_CONFIG_PATH = Path("~/.pacifica-cartd/config.ini")

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([kmgtp])(i?)([bB])|([bB]))?\s*$", re.IGNORECASE)
_EXPONENT = {"k": 1, "m": 2, "g": 3, "t": 4, "p": 5}
_SIZE_HELP = "use bytes or a unit: '4 MB' (10^6), '4 Mb' or '4 MiB' (2^20)"


def parse_size(text: str | int) -> int:
    """Bytes from `4096` or a number with a unit, read as Pacifica Cartd 0.7.0 reads it.

    The original's `parse_size` takes `B`, `KB`, `MB`, `GB`, `TB` as powers of 1000 and
    `b`, `Kb`, `Mb`, `Gb`, `Tb` as powers of 1024 (its default `transfer_size` is
    `4 Mb`, 4 MiB). So here the case of the final `b` decides: `B` counts in 1000s, `b`
    in 1024s; the prefix may be of either case, `P` is added, and `KiB`, `MiB`, ... are
    always 1024s. The space between number and unit is optional. A prefix without a
    `b` (`4 M`) says neither and is refused.
    """
    if isinstance(text, int):
        return text
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} ({_SIZE_HELP})")
    number, prefix, binary, last, bare = match.groups()
    if bare is not None or prefix is None:
        return int(float(number))
    base = 1024 if binary or last == "b" else 1000
    return int(float(number) * base ** _EXPONENT[prefix.lower()])


#: Shortest accepted `callback_secret`: a shorter HMAC key is guessed too easily.
CALLBACK_SECRET_MIN = 16

#: One entry of `callback_hosts`: a lower-case host name, IPv4 address or bracketed IPv6
#: address, and the one port allowed (None: any port).
CallbackHost = tuple[str, int | None]

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_PORT = re.compile(r"^[0-9]{1,5}$")


def parse_callback_host(text: str) -> CallbackHost:
    """`host`, `host:port`, `[v6]` or `[v6]:port`, as a pair; ValueError naming the entry.

    Host names are lower-cased (DNS ignores case); an IPv6 address is kept in its shortest
    form, the only spelling a callback URL is then matched against.
    """
    entry = text.strip().lower()
    host, port_text = entry, ""
    if entry.startswith("["):
        close = entry.find("]")
        host, rest = entry[: close + 1], entry[close + 1 :]
        if close == -1 or (rest and not rest.startswith(":")):
            raise ValueError(f"{text.strip()!r} is not host[:port]")
        port_text = rest[1:] if rest else ""
        try:
            address = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{text.strip()!r}: not an IPv6 address in brackets") from None
        host = f"[{address.compressed}]"
    else:
        host, colon, port_text = entry.partition(":")
        if colon and not port_text:
            raise ValueError(f"{text.strip()!r} has an empty port")
        labels = host.split(".")
        if not all(_LABEL.match(label) for label in labels) or len(host) > 253:
            raise ValueError(f"{text.strip()!r}: not a host name or IPv4 address")
    port = None
    if port_text or entry.endswith(":"):
        if not _PORT.match(port_text) or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"{text.strip()!r}: the port must be 1 to 65535")
        port = int(port_text)
    return host, port


@dataclass(frozen=True)
class Key:
    """Where one setting comes from: its INI section and key, and its environment variable."""

    field: str
    section: str
    key: str
    env: str
    doc: str
    #: Older environment variables read when `env` is not set (the newest name wins).
    aliases: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"

    @property
    def env_names(self) -> tuple[str, ...]:
        return (self.env, *self.aliases)


#: Every setting cartd reads. The first block is the original's, the rest are cartd's own.
KEYS: tuple[Key, ...] = (
    Key(
        "volume_path",
        "cartd",
        "volume_path",
        "VOLUME_PATH",
        "Folder where staged files and bundles are kept.",
    ),
    Key(
        "lru_buffer_time",
        "cartd",
        "lru_buffer_time",
        "LRU_BUFFER_TIME",
        "Seconds after its last use during which a cart is safe from eviction.",
    ),
    Key(
        "lru_purge",
        "cartd",
        "lru_purge",
        "LRU_PURGE",
        "Evict least recently used carts when space runs out (on/off).",
    ),
    Key(
        "bundle_task",
        "cartd",
        "bundle_task",
        "BUNDLE_TASK",
        "Default of a POST's `bundle`: write the tar once onto the volume (on/off).",
    ),
    Key(
        "transfer_size",
        "cartd",
        "transfer_size",
        "TRANSFER_SIZE",
        "Size of the chunks read from disk (the volume, a `file://` archive) and sent to clients.",
    ),
    Key(
        "volume_size_limit",
        "cartd",
        "volume_size_limit",
        "VOLUME_SIZE_LIMIT",
        "Most bytes the volume may hold (default: the filesystem's free space).",
    ),
    Key(
        "archive_url",
        "archiveinterface",
        "url",
        "ARCHIVE_INTERFACE_URL",
        "Archive base URL: http(s):// for a Pacifica Archive Interface, file:// for a folder.",
    ),
    Key(
        "broker_url",
        "celery",
        "broker_url",
        "BROKER_URL",
        "Celery broker; when unset the embedded worker runs inside `cartd serve`.",
    ),
    Key("backend_url", "celery", "backend_url", "BACKEND_URL", "Celery result backend."),
    Key(
        "celery_queue",
        "celery",
        "queue",
        "CARTD_CELERY_QUEUE",
        "Broker queue the API processes send steps to and `cartd worker` takes them from.",
    ),
    Key(
        "sweep_grace",
        "cartd",
        "sweep_grace",
        "CARTD_SWEEP_GRACE",
        "Seconds a step may be overdue before a worker's sweep sends it again (its task lost).",
    ),
    Key(
        "metrics_port",
        "cartd",
        "metrics_port",
        "CARTD_METRICS_PORT",
        "Port on which each `cartd worker` serves its Prometheus metrics (0 or unset: none;"
        " `cartd worker --metrics-port` overrides it). API processes serve `GET /metrics`.",
    ),
    Key(
        "metrics_address",
        "cartd",
        "metrics_address",
        "CARTD_METRICS_ADDRESS",
        "Address a worker's metrics endpoint listens on (default 127.0.0.1; 0.0.0.0 for all).",
    ),
    Key(
        "socket_host",
        "server",
        "socket_host",
        "CARTD_SOCKET_HOST",
        "Address `cartd serve` listens on (`-a` overrides it; so does a CherryPy file's"
        " `server.socket_host`).",
    ),
    Key(
        "socket_port",
        "server",
        "socket_port",
        "CARTD_SOCKET_PORT",
        "Port `cartd serve` listens on (`-p` overrides it; so does a CherryPy file's"
        " `server.socket_port`).",
    ),
    Key(
        "access_log_file",
        "log",
        "access_file",
        "CARTD_ACCESS_LOG_FILE",
        "File that gets one line per HTTP request instead of the log (default: none, the"
        " requests are in the log).",
    ),
    Key(
        "error_log_file",
        "log",
        "error_file",
        "CARTD_ERROR_LOG_FILE",
        "File that gets cartd's warnings and errors, besides the log on stderr (default: none).",
    ),
    Key(
        "database_url",
        "database",
        "peewee_url",
        "PEEWEE_URL",
        "Database URL (SQLAlchemy or the original's peewee forms); default: SQLite in the volume.",
    ),
    Key(
        "database_connect_attempts",
        "database",
        "connect_attempts",
        "DATABASE_CONNECT_ATTEMPTS",
        "How many times to try reaching the database at start.",
    ),
    Key(
        "database_connect_wait",
        "database",
        "connect_wait",
        "DATABASE_CONNECT_WAIT",
        "Seconds between those attempts.",
        aliases=("DATABASE_WAIT",),
    ),
    Key(
        "database_pool_size",
        "database",
        "pool_size",
        "DATABASE_POOL_SIZE",
        "Database connections each process keeps open (default: cartd.stage_workers + 4).",
    ),
    Key(
        "database_max_overflow",
        "database",
        "max_overflow",
        "DATABASE_MAX_OVERFLOW",
        "Connections a process may open beyond its pool at a busy moment (default: the pool size).",
    ),
    Key(
        "database_debug_logging",
        "database",
        "debug_logging",
        "DATABASE_DEBUG_LOGGING",
        "Log every SQL statement.",
        aliases=("DATABASE_LOGGING",),
    ),
    Key(
        "archive_timeout",
        "archiveinterface",
        "timeout",
        "CARTD_ARCHIVE_TIMEOUT",
        "Seconds without progress before an archive request counts as failed.",
    ),
    Key(
        "stage_workers",
        "cartd",
        "stage_workers",
        "CARTD_STAGE_WORKERS",
        "Files worked on at once by the embedded worker.",
    ),
    Key(
        "retry_attempts",
        "cartd",
        "retry_attempts",
        "CARTD_RETRY_ATTEMPTS",
        "Tries of one archive step before a transient fault ends the cart in error.",
    ),
    Key(
        "retry_initial",
        "cartd",
        "retry_initial",
        "CARTD_RETRY_INITIAL",
        "Seconds before the first retry of a failed archive step; doubles each time.",
    ),
    Key("retry_max", "cartd", "retry_max", "CARTD_RETRY_MAX", "Longest wait between retries."),
    Key(
        "poll_initial",
        "cartd",
        "poll_initial",
        "CARTD_POLL_INITIAL",
        "Seconds before asking again whether a file on tape is on disk; grows by half each time.",
    ),
    Key(
        "max_order_size",
        "cartd",
        "max_order_size",
        "CARTD_MAX_ORDER_SIZE",
        "Largest order (POST body) accepted; a larger one gets 413 without being read.",
    ),
    Key(
        "poll_max",
        "cartd",
        "poll_max",
        "CARTD_POLL_MAX",
        "Longest wait between two such questions.",
    ),
    Key(
        "claim_seconds",
        "cartd",
        "claim_seconds",
        "CARTD_CLAIM_SECONDS",
        "Seconds a step's claim on a file or cart lasts unless renewed (renewed while the step"
        " runs); the work of a process that died is taken up after at most this long.",
    ),
    Key(
        "callback_hosts",
        "cartd",
        "callback_hosts",
        "CARTD_CALLBACK_HOSTS",
        "Comma-separated `host[:port]` an order's `callback` may name (unset: callbacks are"
        " not enabled, and an order with one gets 400).",
    ),
    Key(
        "callback_secret",
        "cartd",
        "callback_secret",
        "CARTD_CALLBACK_SECRET",
        "Shared secret of the HMAC-SHA256 signing every callback; needed once"
        " `callback_hosts` is set.",
    ),
    Key(
        "callback_attempts",
        "cartd",
        "callback_attempts",
        "CARTD_CALLBACK_ATTEMPTS",
        "Tries of one callback event (a 5xx, 408 or 429 answer, no answer) before it is given up.",
    ),
    Key(
        "callback_retry_initial",
        "cartd",
        "callback_retry_initial",
        "CARTD_CALLBACK_RETRY_INITIAL",
        "Seconds before the first retry of a callback event; doubles each time.",
    ),
    Key(
        "callback_retry_max",
        "cartd",
        "callback_retry_max",
        "CARTD_CALLBACK_RETRY_MAX",
        "Longest wait between two tries of a callback event.",
    ),
    Key(
        "callback_timeout",
        "cartd",
        "callback_timeout",
        "CARTD_CALLBACK_TIMEOUT",
        "Seconds a callback's receiver has to connect, read and answer (each), else the try"
        " counts as failed.",
    ),
    Key(
        "max_wait",
        "cartd",
        "max_wait",
        "CARTD_MAX_WAIT",
        "Longest a `HEAD` with `Prefer: wait=N` is held waiting for its cart to change, or a"
        " `GET` with `Prefer: wait` for its cart's sizes (at most 30 s), in whole seconds; a"
        " longer N is cut to this (0: never held).",
    ),
    Key(
        "stream_while_pulling",
        "cartd",
        "stream_while_pulling",
        "CARTD_STREAM_WHILE_PULLING",
        "Whether a `GET` with `Prefer: wait` sends a tar member's bytes while its file is"
        " pulled, all but its last 64 KiB, which wait for the checksum (a file that fails"
        " cuts the stream inside its member); false: each member once its file is verified.",
    ),
)
KEYS_BY_FIELD = {key.field: key for key in KEYS}


class Settings(BaseModel):
    """Everything cartd can be told, validated once at start."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    volume_path: Path = Field(
        default_factory=lambda: Path(platformdirs.user_data_dir("cartd")) / "volume"
    )
    lru_buffer_time: float = Field(0.0, ge=0)
    lru_purge: bool = True
    bundle_task: bool = False
    transfer_size: int = Field(1024 * 1024, ge=4096)
    volume_size_limit: int | None = Field(None, gt=0)
    archive_url: str = "http://127.0.0.1:8080/"
    broker_url: str | None = None
    backend_url: str | None = None
    celery_queue: str = Field("cartd", min_length=1, max_length=200)
    sweep_grace: float = Field(300.0, gt=0)
    metrics_port: int = Field(0, ge=0, le=65535)
    metrics_address: str = Field("127.0.0.1", min_length=1)
    socket_host: str = Field("127.0.0.1", min_length=1)
    socket_port: int = Field(8081, ge=0, le=65535)
    access_log_file: Path | None = None
    error_log_file: Path | None = None
    database_url: str | None = None
    database_connect_attempts: int = Field(10, ge=1)
    database_connect_wait: float = Field(20.0, ge=0)
    database_debug_logging: bool = False
    database_pool_size: int | None = Field(None, ge=1)
    database_max_overflow: int | None = Field(None, ge=0)
    archive_timeout: float = Field(60.0, gt=0)
    stage_workers: int = Field(4, ge=1, le=256)
    retry_attempts: int = Field(6, ge=1)
    retry_initial: float = Field(0.5, ge=0)
    retry_max: float = Field(30.0, ge=0)
    poll_initial: float = Field(1.0, gt=0)
    poll_max: float = Field(300.0, gt=0)
    claim_seconds: float = Field(60.0, ge=1)
    max_order_size: int = Field(32 * 1024 * 1024, ge=1)
    #: Where an order's callback may go: (host, port or None for any port), lower case.
    callback_hosts: tuple[CallbackHost, ...] = ()
    callback_secret: SecretStr | None = Field(None, validate_default=True)
    callback_attempts: int = Field(15, ge=1)
    callback_retry_initial: float = Field(1.0, ge=0)
    callback_retry_max: float = Field(600.0, ge=0)
    callback_timeout: float = Field(10.0, gt=0)
    # Under the 60 s a common proxy waits for an answer to begin (nginx's proxy_read_timeout).
    max_wait: int = Field(50, ge=0, le=86400)
    stream_while_pulling: bool = True

    @field_validator("transfer_size", "volume_size_limit", "max_order_size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in {"", "none"}):
            return None
        return parse_size(value) if isinstance(value, str | int) else value

    @field_validator("archive_url")
    @classmethod
    def _archive_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://", "file://")):
            raise ValueError("must start with http://, https:// or file://")
        if value.startswith("http") and not value.endswith("/"):
            value += "/"
        return value

    @field_validator("volume_path")
    @classmethod
    def _volume_path(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @field_validator("database_pool_size", "database_max_overflow", mode="before")
    @classmethod
    def _unset_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip().lower() in {"", "none"} else value

    @field_validator("access_log_file", "error_log_file", mode="before")
    @classmethod
    def _no_file(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip().lower() in {"", "none"} else value

    @field_validator("metrics_port", mode="before")
    @classmethod
    def _unset_is_zero(cls, value: Any) -> Any:
        return 0 if isinstance(value, str) and value.strip().lower() in {"", "none"} else value

    @field_validator("callback_hosts", mode="before")
    @classmethod
    def _callback_hosts(cls, value: Any) -> Any:
        if value is None:
            return ()
        if isinstance(value, str):
            return tuple(parse_callback_host(part) for part in value.split(",") if part.strip())
        return value

    @field_validator("callback_secret", mode="before")
    @classmethod
    def _no_secret(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("callback_secret")
    @classmethod
    def _secret_when_enabled(cls, value: SecretStr | None, info: ValidationInfo) -> Any:
        # A callback is always signed: with hosts to send to and no secret, refuse to start
        # rather than send events a receiver cannot tell from forgeries.
        if value is None and info.data.get("callback_hosts"):
            raise ValueError(
                "must be set when cartd.callback_hosts is (every callback is signed with it)"
            )
        if value is not None and len(value.get_secret_value()) < CALLBACK_SECRET_MIN:
            raise ValueError(
                f"must be at least {CALLBACK_SECRET_MIN} characters (e.g. `openssl rand -hex 32`)"
            )
        return value

    @property
    def pool_size(self) -> int:
        """Connections kept per process: one per staging thread, plus a few for requests."""
        if self.database_pool_size is not None:
            return self.database_pool_size
        return self.stage_workers + 4

    @property
    def max_overflow(self) -> int:
        if self.database_max_overflow is not None:
            return self.database_max_overflow
        return self.pool_size

    @field_validator("broker_url", "backend_url", "database_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value


def _read_ini(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with path.open(encoding="utf-8") as handle:
            parser.read_file(handle)
    except (OSError, configparser.Error) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    values: dict[str, str] = {}
    for key in KEYS:
        if parser.has_option(key.section, key.key):
            values[key.field] = parser.get(key.section, key.key)
    return values


def config_path_from(
    explicit: str | os.PathLike[str] | None, environ: Mapping[str, str]
) -> Path | None:
    """The INI file to read: the one named, else `CARTD_CONFIG`, else the original's default."""
    if explicit:
        return Path(explicit).expanduser()
    if environ.get("CARTD_CONFIG"):
        return Path(environ["CARTD_CONFIG"]).expanduser()
    default = DEFAULT_CONFIG_PATH.expanduser()
    return default if default.exists() else None


def load_settings(
    config: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Read the INI file, let the environment override it, validate, name the key on error."""
    env = os.environ if environ is None else environ
    path = config_path_from(config, env)
    values: dict[str, Any] = {}
    if path is not None:
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        values = dict(_read_ini(path))
    for key in KEYS:
        given = [name for name in key.env_names if name in env]
        if not given:
            continue
        name = given[0]
        for older in given[1:]:
            if env[older] != env[name]:
                log.warning(
                    "%s and %s are both set; %s wins (%s is its older name)",
                    name,
                    older,
                    name,
                    older,
                )
        if key.field in values and values[key.field] != env[name]:
            log.warning(
                "%s is set in %s and in the environment as %s; the environment wins",
                key.name,
                path,
                name,
            )
        values[key.field] = env[name]
    values.update(overrides)
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            known = KEYS_BY_FIELD.get(field)
            where = f"{known.name} ({known.env})" if known else field
            problems.append(f"{where}: {error['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
