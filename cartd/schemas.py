"""What a client may send, validated before anything is stored.

The body of `POST /<uid>` has one definition, the pydantic model `Order`: it validates the
body and it is the OpenAPI description of it, so the two cannot drift apart. Each rule is
a pydantic constraint where pydantic has one (types, lengths, patterns), else a validator
beside the field, whose JSON Schema form (a pattern) is declared with it through
`Documented`; rules JSON Schema cannot state (byte lengths, percent-encoded ids, two files
at one place) are in the descriptions.

Validation raises `InvalidRequest` with a message that names the offending field (such as
`fileids[3].path`), so a bad order gets a clear 400 and changes nothing. This module
imports no web framework.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Final
from urllib.parse import unquote

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    JsonValue,
    StrictBool,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic.types import Strict
from pydantic_core import CoreSchema, ErrorDetails, PydanticCustomError

from cartd.errors import InvalidRequest

#: Control characters (C0, DEL, C1), as a regex class body valid in Python and ECMA 262.
_CONTROLS = r"\x00-\x1f\x7f-\x9f"
_CONTROL = re.compile(f"[{_CONTROLS}]")

#: A cart's name: 1 to 64 of `A-Z a-z 0-9 . _ -`, not `.` or `..`.
UID_PATTERN: Final = r"^(?!\.\.?$)[A-Za-z0-9._-]{1,64}$"
_UID = re.compile(UID_PATTERN)

#: Longest archive id, in characters; an integer id is as long as its decimal form.
ID_MAX_CHARS: Final = 1024
ID_MAX: Final = 10**ID_MAX_CHARS - 1
ID_MIN: Final = -(10 ** (ID_MAX_CHARS - 1) - 1)
#: Longest `path` as sent, and longest segment of it, in bytes of UTF-8. With a top folder
#: of at most `NAME_MAX_BYTES`, `<top>/<path>` stays below Linux's PATH_MAX of 4096, so GNU
#: tar and Python's tarfile can unpack every accepted cart.
PATH_MAX_BYTES: Final = 3072
SEGMENT_MAX_BYTES: Final = 255
#: Longest download `filename` (and so top folder), in bytes of UTF-8.
NAME_MAX_BYTES: Final = 255

#: An id with no control character, no leading `/` and no `..` segment (split on `/` and `\`).
ID_PATTERN: Final = rf"^(?!/)(?!(?:[^/\\]*[/\\])*\.\.(?:[/\\]|$))[^{_CONTROLS}]*$"
#: A path with no control character, no `..` segment, and a segment other than `` or `.`.
PATH_PATTERN: Final = (
    rf"^(?!(?:[^/]*/)*\.\.(?:/|$))(?=(?:[^/]*/)*(?:[^/.]|\.[^/]))[^{_CONTROLS}\\]*$"
)
#: A download name: no `/`, no control character, not `.` or `..` (empty: the default).
NAME_PATTERN: Final = rf"^(?!\.\.?$)[^/{_CONTROLS}]*$"
_HEX = r"[0-9a-fA-F]"


def _digest_sizes() -> dict[str, int]:
    """hashlib algorithms this Python can run, with their digest size in bytes. The SHAKEs
    are left out: their digest length is the caller's choice."""
    sizes = {}
    for name in sorted(hashlib.algorithms_available):
        if name.startswith("shake"):
            continue
        try:
            sizes[name] = hashlib.new(name).digest_size
        except ValueError:  # listed by OpenSSL but not usable (e.g. disabled by policy)
            continue
    return sizes


DIGEST_SIZES: Final = _digest_sizes()
#: Algorithms accepted as `hashtype` (in any letter case), stored lower case.
HASH_ALGORITHMS: Final = frozenset(DIGEST_SIZES)


def _any_case(names: Iterable[str]) -> str:
    """A pattern matching exactly these ASCII names in any letter case, as `[mM][dD]5`."""
    assert all(re.fullmatch(r"[a-z0-9_-]+", name) for name in names), names
    spelled = (
        # hashlib names are letters, digits, `_` and `-`: none needs escaping (and ECMA 262
        # with its `u` flag refuses a needless escape such as `\-`).
        "".join(f"[{c}{c.upper()}]" if c.isalpha() else c for c in name)
        for name in sorted(names)
    )
    return f"^(?:{'|'.join(spelled)})$"


HASHTYPE_PATTERN: Final = _any_case(HASH_ALGORITHMS)
HASHSUM_PATTERN: Final = f"^{_HEX}*$"


def _hashsum_rules() -> list[JsonValue]:
    """The JSON Schema form of "a hashsum is empty or as long as its algorithm's digest":
    one alternative per digest length."""
    by_size: dict[int, list[str]] = {}
    for name, size in DIGEST_SIZES.items():
        by_size.setdefault(size, []).append(name)
    return [
        {
            "properties": {
                "hashtype": {"pattern": _any_case(names)},
                "hashsum": {"pattern": f"^(?:{_HEX}{{{size * 2}}})?$"},
            }
        }
        for size, names in sorted(by_size.items())
    ]


@dataclass(frozen=True)
class Documented:
    """What a field's validator enforces beyond pydantic's own constraints, in JSON Schema
    words, so the OpenAPI description says exactly what is refused."""

    pattern: str
    description: str

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        schema["pattern"] = self.pattern
        schema["description"] = self.description
        return schema


def _refuse(reason: str) -> PydanticCustomError:
    """An error whose message is `reason` as it is (a template would read `{` in it)."""
    return PydanticCustomError("cartd", "{reason}", {"reason": reason})


def _utf8_length(text: str) -> int:
    """Bytes of UTF-8; refuses what is not Unicode text (a lone surrogate from `\\ud800`)."""
    if text.isascii():
        return len(text)
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise _refuse("is not valid Unicode text (it holds a lone surrogate)") from None


_SEPARATORS = re.compile(r"[/\\]")


def _leaves_folder(file_id: str) -> bool:
    """Whether an id starts with `/` or has a `..` segment (split on `/` and `\\`), as it is
    or after percent-decoding it any number of times (`%2e%2e%2f`, `%252e%252e`)."""
    text = file_id
    while True:
        if text.startswith("/") or (".." in text and ".." in _SEPARATORS.split(text)):
            return True
        if "%" not in text:
            return False
        decoded = unquote(text)
        if decoded == text:
            return False
        text = decoded


def _id_text(value: object) -> str:
    """An id as text: a string as it is, an integer in decimal (a bool is no integer)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if not ID_MIN <= value <= ID_MAX:  # before str(): Python refuses 4,300+ digits
            raise _refuse(f"must be an integer of at most {ID_MAX_CHARS} characters")
        return str(value)
    raise _refuse("must be a string or an integer")


def _inside_the_archive(value: str) -> str:
    if _CONTROL.search(value):
        raise _refuse(f"{value[:80]!r} must not contain control characters")
    _utf8_length(value)
    if _leaves_folder(value):
        raise _refuse(
            f"{value[:80]!r} would leave the archive's folder (a leading '/' or a '..'"
            " segment, as sent or percent-decoded)"
        )
    return value


@dataclass(frozen=True)
class _IdSchema:
    """The JSON Schema of an id as a client sends it: a string or an integer."""

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        text = handler(core_schema)
        text["pattern"] = ID_PATTERN
        text["description"] = (
            "no control character; it must not leave the archive's folder: no leading `/`"
            " and no `..` segment (split on `/` and `\\`), neither as sent nor after"
            " percent-decoding it any number of times (so `%2e%2e%2f`, `%252e%252e` and a"
            " leading `%2F` are refused too)"
        )
        number = {"type": "integer", "minimum": ID_MIN, "maximum": ID_MAX}
        return {
            "anyOf": [text, number],
            "description": f"the archive's id of the file: a string of 1 to {ID_MAX_CHARS}"
            " characters, or an integer (written without fraction or exponent) of at most"
            f" {ID_MAX_CHARS} characters",
        }


def _normalized(value: str) -> str:
    """The path inside the bundle: relative, no `..`, no empty or `.` segments."""
    if _CONTROL.search(value):
        raise _refuse(f"{value[:200]!r} must not contain control characters")
    if _utf8_length(value) > PATH_MAX_BYTES:
        raise _refuse(f"{value[:200]!r}... is over {PATH_MAX_BYTES} bytes of UTF-8")
    if "\\" in value:
        raise _refuse(
            f"{value[:200]!r} must not contain '\\': some extractors take it for a folder"
            " separator, so the file would not land where it was ordered"
        )
    parts = value.split("/")
    if "" in parts or "." in parts:
        parts = [part for part in parts if part not in ("", ".")]
        if not parts:
            raise _refuse(f"{value[:200]!r} is empty")
    if ".." in parts:
        raise _refuse(f"{value[:200]!r} must not contain '..' segments")
    if len(value) > SEGMENT_MAX_BYTES // 4:  # else no segment can be over the limit
        for part in parts:
            if len(part) > SEGMENT_MAX_BYTES // 4 and _utf8_length(part) > SEGMENT_MAX_BYTES:
                raise _refuse(
                    f"{value[:200]!r} has a segment over {SEGMENT_MAX_BYTES} bytes of UTF-8"
                )
    return "/".join(parts)


def _digest_length(value: str, info: ValidationInfo) -> str:
    hashtype = info.data.get("hashtype")
    if value and hashtype is not None and len(value) != DIGEST_SIZES[hashtype] * 2:
        expected = DIGEST_SIZES[hashtype] * 2
        raise _refuse(f"has {len(value)} hex digits; {hashtype} has {expected}")
    return value.lower()


@dataclass(frozen=True, slots=True)
class FileOrder:
    """One wanted file: archive id, place in the bundle, expected checksum.

    It is also the schema of one entry of an order's `fileids`: pydantic validates straight
    into it, which for an order of 100,000 files takes a third of the time of validating a
    model and copying it into this record.
    """

    __pydantic_config__ = ConfigDict(
        json_schema_extra={
            "description": "one file of the cart; keys other than these four are ignored",
            "anyOf": _hashsum_rules(),
        }
    )

    archive_id: Annotated[
        str,
        BeforeValidator(_id_text),
        StringConstraints(min_length=1, max_length=ID_MAX_CHARS),
        AfterValidator(_inside_the_archive),
        _IdSchema(),
        Field(alias="id"),
    ]
    path: Annotated[
        str,
        Strict(),
        StringConstraints(max_length=PATH_MAX_BYTES),
        AfterValidator(_normalized),
        Documented(
            PATH_PATTERN,
            "where the file goes in the tar, below its top folder. A leading `/`, empty"
            " segments and `.` segments are dropped; what is left must not be empty. No"
            f" control character, no `\\` and no `..` segment. At most {PATH_MAX_BYTES} bytes of"
            f" UTF-8 as sent, each segment at most {SEGMENT_MAX_BYTES} bytes. No two files"
            " of a cart may land at one path, and no file where another needs a folder"
            " (`a` and `a/b`).",
        ),
    ]
    hashtype: Annotated[
        str,
        Strict(),
        StringConstraints(pattern=HASHTYPE_PATTERN),
        AfterValidator(str.lower),
        Field(description="a hashlib algorithm (not a SHAKE), in any letter case"),
    ]
    hashsum: Annotated[
        str,
        Strict(),
        StringConstraints(pattern=HASHSUM_PATTERN),
        AfterValidator(_digest_length),
        Field(
            description="the hex digest the bytes must have: exactly as many hex digits as"
            " the algorithm's digest, or empty (which then fails verification)"
        ),
    ]


#: Longest `callback` URL, in characters.
CALLBACK_MAX_CHARS: Final = 2048
#: A TCP port, 1 to 65535, written without leading zeros.
_PORT_NUMBER = (
    r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
)
#: What may follow a callback's host and port: a path, query and fragment of the URL
#: characters of RFC 3986 (no space, no `\`, no `[` `]`, nothing outside ASCII), each `%`
#: starting an escape. The authority ends at the first `/`, `?` or `#`, so nothing after
#: the host can be taken for another host or a user name.
_URL_REST = r"(?:[/?#](?:[A-Za-z0-9._~!$&'()*+,;=:@/?#-]|%[0-9A-Fa-f]{2})*)?"
_SCHEME_PORTS = (("http", 80), ("https", 443))

#: One entry of `cartd.callback_hosts`: a lower-case host, and its one port (None: any).
CallbackHost = tuple[str, int | None]


def _host_pattern(host: str) -> str:
    """A host as configured, matched in any letter case (DNS ignores case); valid in Python
    and ECMA 262 alike."""
    escaped = {".": r"\.", "[": r"\[", "]": r"\]"}
    return "".join(f"[{c}{c.upper()}]" if c.isalpha() else escaped.get(c, c) for c in host)


def _host_text(host: CallbackHost) -> str:
    name, port = host
    return name if port is None else f"{name}:{port}"


@dataclass(frozen=True)
class CallbackRule:
    """Where an order's `callback` may point, from `cartd.callback_hosts`: an http or https
    URL (lower-case scheme) whose host is one of `hosts`, on the port an entry names (or
    the scheme's default port, 80 or 443, left out) or on any port for an entry without
    one; no user name or password; at most `CALLBACK_MAX_CHARS` characters.

    The rule is one regular expression, `pattern`: it decides what is accepted, here and
    again before each send, and it is what the OpenAPI description states.
    """

    hosts: tuple[CallbackHost, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.hosts)

    @cached_property
    def pattern(self) -> str:
        schemes = []
        for scheme, default in _SCHEME_PORTS:
            alternatives = []
            for host, port in self.hosts:
                name = _host_pattern(host)
                if port is None:
                    alternatives.append(f"{name}(?::{_PORT_NUMBER})?")
                else:
                    alternatives.append(f"{name}:{port}")
                    if port == default:
                        alternatives.append(name)
            schemes.append(f"{scheme}://(?:{'|'.join(alternatives)})")
        return f"^(?:{'|'.join(schemes)}){_URL_REST}$"

    @cached_property
    def _compiled(self) -> re.Pattern[str]:
        return re.compile(self.pattern)

    def allows(self, url: str) -> bool:
        return (
            self.enabled
            and len(url) <= CALLBACK_MAX_CHARS
            and self._compiled.fullmatch(url) is not None
        )

    def check(self, url: str) -> str:
        """The URL when allowed; else raise `InvalidRequest` saying why."""
        if self.allows(url):
            return url
        raise InvalidRequest(f"'callback' {self._why_not(url)}")

    def _why_not(self, url: str) -> str:
        """Why a URL the rule refuses is refused, in words (the pattern decided)."""
        if not self.enabled:
            return "is not accepted: callbacks are not enabled on this server"
        if len(url) > CALLBACK_MAX_CHARS:
            return f"is over {CALLBACK_MAX_CHARS} characters"
        if not url.startswith(("http://", "https://")):
            return "must be an http:// or https:// URL (scheme in lower case)"
        authority = re.split(r"[/?#]", url.split("://", 1)[1], maxsplit=1)[0]
        if "@" in authority:
            return "must not carry a user name or password"
        allowed = ", ".join(_host_text(host) for host in self.hosts)
        if not self._compiled.fullmatch(url.split("://", 1)[0] + "://" + authority):
            return (
                f"names {authority[:300]!r}, to which this server sends no callbacks"
                f" (allowed: {allowed})"
            )
        return (
            "may hold after its host only the URL characters A-Z a-z 0-9 - . _ ~ ! $ & '"
            " ( ) * + , ; = : @ / ? # and %XX escapes"
        )

    def json_schema(self) -> JsonSchemaValue:
        """The `callback` property of the order's OpenAPI description."""
        if not self.enabled:
            return {
                "type": "null",
                "description": "a URL to send the cart's ready or error event to; callbacks"
                " are not enabled on this server (`cartd.callback_hosts` is not set), so"
                " only null (or no `callback`) is accepted",
            }
        return {
            "anyOf": [
                {"type": "string", "maxLength": CALLBACK_MAX_CHARS, "pattern": self.pattern},
                {"type": "null"},
            ],
            "description": "a URL that gets a signed JSON event (POST) when the cart becomes"
            " ready or fails: http:// or https:// (lower case), to one of the hosts"
            f" {', '.join(_host_text(host) for host in self.hosts)} (an entry without a port"
            " allows any port; one with a port allows that port, and the scheme's default"
            " port left out when it is 80 for http or 443 for https), no user name or"
            f" password, at most {CALLBACK_MAX_CHARS} characters; null or absent: none",
        }


def _callback(value: str, info: ValidationInfo) -> str:
    rule = info.context.get("callbacks") if isinstance(info.context, dict) else None
    try:
        return (rule or CallbackRule()).check(value)
    except InvalidRequest as exc:
        raise _refuse(exc.message.removeprefix("'callback' ")) from None


class Order(BaseModel):
    """The body of `POST /<uid>`. Keys not named here are ignored."""

    model_config = ConfigDict(extra="ignore")

    fileids: list[FileOrder] = Field(
        min_length=1,
        description="the files of the cart. No two may have the same `path` (after it is"
        " normalized), and no file's path may be a folder of another's (`a` and `a/b`).",
    )
    bundle: StrictBool | None = Field(
        None,
        description="true: write the tar once onto the volume when the cart is ready;"
        " false: stream it from the staged files; absent or null: the configured default",
    )
    #: Described by `CallbackRule.json_schema`, which depends on the configuration.
    callback: Annotated[str, Strict(), AfterValidator(_callback)] | None = None


def order_json_schema(callbacks: CallbackRule, ref_template: str) -> JsonSchemaValue:
    """The order's JSON Schema as this server checks it: its `callback` property states
    the hosts the configuration allows."""
    schema = Order.model_json_schema(ref_template=ref_template)
    schema["properties"]["callback"] = callbacks.json_schema()
    return schema


def validate_uid(uid: str) -> str:
    if not _UID.fullmatch(uid):
        raise InvalidRequest(
            f"invalid cart uid {uid[:80]!r}: use 1 to 64 characters from A-Z a-z 0-9 . _ -"
        )
    return uid


def validate_download_name(name: str | None, default: str) -> str:
    """The `filename` query parameter: one safe file name."""
    if name is None or name == "":
        return default
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidRequest("invalid filename: it is not valid Unicode text") from None
    if "/" in name or _CONTROL.search(name) or size > NAME_MAX_BYTES:
        raise InvalidRequest(
            f"invalid filename: it must be one name of at most {NAME_MAX_BYTES} bytes,"
            " without '/' or control characters"
        )
    if name in {".", ".."}:
        raise InvalidRequest("invalid filename: '.' and '..' are not file names")
    return name


class Packing(StrEnum):
    """What a download's bytes are (`?format=`): the tar of old, or a zip."""

    TAR = "tar"
    ZIP = "zip"

    @property
    def ending(self) -> str:
        return f".{self.value}"


#: The values of `?manifest=`: without a manifest, and with one per hash type.
MANIFEST_VALUES: Final = ("0", "1")


def parse_packing(value: str) -> Packing:
    """The `format` query parameter, exactly `tar` or `zip`."""
    try:
        return Packing(value)
    except ValueError:
        raise InvalidRequest(
            f"invalid format {value[:40]!r}: use tar (the default) or zip"
        ) from None


def parse_manifest(value: str) -> bool:
    """The `manifest` query parameter: `1` adds the manifests, `0` does not."""
    if value not in MANIFEST_VALUES:
        raise InvalidRequest(
            f"invalid manifest {value[:40]!r}: use 1 for a manifest, 0 (the default) for none"
        )
    return value == "1"


@dataclass(frozen=True)
class CartOrder:
    files: tuple[FileOrder, ...]
    bundle: bool | None
    callback: str | None = None


def _field_rule(field: str, error: ErrorDetails) -> str:
    """What a field must be, for an error of pydantic's own constraints on it."""
    value = error["input"]
    if field == "id":  # the type and an integer's size were checked by `_id_text`
        return f"must be 1 to {ID_MAX_CHARS} characters"
    if field == "path":
        if isinstance(value, str):
            return f"{value[:200]!r}... is over {PATH_MAX_BYTES} bytes of UTF-8"
        return "must be a string"
    if field == "hashtype":
        return (
            f"{str(value)[:40]!r} is not a known hash algorithm"
            f" (known: {', '.join(sorted(HASH_ALGORITHMS))})"
        )
    return "must be a hex digest string"


def _problem(errors: list[ErrorDetails]) -> str:
    """The first problem of an order, in words that name the field."""
    error = errors[0]
    loc = error["loc"]
    if not loc:
        return "the request body must be a JSON object with a 'fileids' list"
    if loc[0] == "bundle":
        return "'bundle' must be true or false"
    if loc[0] == "callback":
        if error["type"] == "cartd":
            return f"'callback' {error['msg']}"
        return "'callback' must be a URL (a string) or null"
    if len(loc) == 1:
        if error["type"] == "missing":
            return "the request body lacks 'fileids'"
        return "'fileids' must be a non-empty list"
    where = f"fileids[{loc[1]}]"
    if len(loc) == 2:
        return f"{where} must be an object with id, path, hashtype and hashsum"
    if error["type"] == "missing":
        missing = [
            str(other["loc"][2])
            for other in errors
            if other["type"] == "missing" and other["loc"][:2] == loc[:2]
        ]
        return f"{where} lacks {', '.join(missing)}"
    field = str(loc[2])
    if error["type"] == "cartd":
        return f"{where}.{field} {error['msg']}"
    return f"{where}.{field} {_field_rule(field, error)}"


def _check_layout(files: list[FileOrder]) -> None:
    """No two files at one place, and no file where another needs a folder."""
    seen: dict[str, int] = {}
    for index, order in enumerate(files):
        if order.path in seen:
            raise InvalidRequest(
                f"fileids[{index}].path {order.path!r} is also the path of"
                f" fileids[{seen[order.path]}]"
            )
        seen[order.path] = index
    for index, order in enumerate(files):
        path = order.path
        cut = path.find("/")
        while cut != -1:
            folder = path[:cut]
            if folder in seen:
                raise InvalidRequest(
                    f"fileids[{seen[folder]}].path {folder!r} is a folder of"
                    f" fileids[{index}].path {path!r}"
                )
            cut = path.find("/", cut + 1)


_FILE_ORDERS: Final = TypeAdapter(list[FileOrder])
#: Entries of an order validated at a time (each call costs about as much as an entry).
_VALIDATED_AT_ONCE = 1024


def _files_a_slice_at_a_time(document: object) -> None:
    """Validate an order's files a slice at a time, each parsed entry replaced by its
    record once read: the parsed JSON and the records of an order of 100,000 files are
    then never all held at once (together they peaked 30 MB above this). The records
    pass the order's own validation as they are. Raises `InvalidRequest` for the first
    bad entry, as that validation would."""
    if not isinstance(document, dict):
        return
    entries = document.get("fileids")
    if not isinstance(entries, list):
        return
    for first in range(0, len(entries), _VALIDATED_AT_ONCE):
        last = first + _VALIDATED_AT_ONCE
        try:
            entries[first:last] = _FILE_ORDERS.validate_python(entries[first:last])
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            for error in errors:
                index, *rest = error["loc"]
                error["loc"] = ("fileids", first + int(index), *rest)
            raise InvalidRequest(_problem(errors)) from None


def parse_cart_order(body: bytes, callbacks: CallbackRule | None = None) -> CartOrder:
    """Parse and check a POST body; raise `InvalidRequest` saying what is wrong. A
    `callback` is checked against `callbacks` (none given: callbacks are not enabled).

    Python's own JSON reader is used rather than pydantic's, which refuses a body with a
    lone surrogate (`"\\ud800"`) without saying where: this way the message names the field.
    pydantic's reader was also tried for speed (0.56 s instead of 0.79 for an order of
    100,000 files), but the process kept about 50 MB more after it, and a download of that
    cart then peaked 20 MB higher.
    """
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("the request body is not valid JSON") from None
    except RecursionError:
        raise InvalidRequest("the request body is nested too deeply") from None
    _files_a_slice_at_a_time(document)
    try:
        order = Order.model_validate(document, context={"callbacks": callbacks})
    except ValidationError as exc:
        raise InvalidRequest(_problem(exc.errors(include_url=False))) from None
    _check_layout(order.fileids)
    return CartOrder(tuple(order.fileids), order.bundle, order.callback)
