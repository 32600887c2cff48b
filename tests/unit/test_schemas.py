"""What a client may send: uids, cart orders and download names (API.md section 2)."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import pytest

from cartd.errors import InvalidRequest
from cartd.schemas import (
    HASHTYPE_PATTERN,
    ID_PATTERN,
    PATH_PATTERN,
    CartOrder,
    parse_cart_order,
    validate_download_name,
    validate_uid,
)

MD5_EMPTY = hashlib.md5(b"").hexdigest()
SHA256_EMPTY = hashlib.sha256(b"").hexdigest()


def entry(path: str = "a.txt", file_id: Any = "f1", **extra: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": file_id,
        "path": path,
        "hashtype": "md5",
        "hashsum": MD5_EMPTY,
    }
    document.update(extra)
    return document


def order(*entries: Any, **top: Any) -> bytes:
    return json.dumps({"fileids": list(entries), **top}).encode()


def refused(body: bytes) -> str:
    with pytest.raises(InvalidRequest) as caught:
        parse_cart_order(body)
    assert caught.value.status_code == 400
    return caught.value.message


# validate_uid


@pytest.mark.parametrize(
    "uid",
    ["2395442f-cf92-4b53-b9c0-88973bd524aa", "36a", "a", "A.b_c-9", "x" * 64, "...", "-", "_"],
)
def test_valid_uids(uid: str) -> None:
    assert validate_uid(uid) == uid


@pytest.mark.parametrize(
    "uid",
    ["", ".", "..", "x" * 65, "a/b", "a b", "a\nb", "a\\b", "caf\u00e9", "\u0663", "a%2F", "a?b"],
)
def test_invalid_uids(uid: str) -> None:
    with pytest.raises(InvalidRequest, match="uid"):
        validate_uid(uid)


# parse_cart_order: a good order


def test_order_as_in_the_api_document() -> None:
    body = order(
        entry("1/2/3/foo.txt", "foo.txt"),
        {"id": 1234, "path": "2/3/4/baz.ini", "hashtype": "sha256", "hashsum": SHA256_EMPTY},
        bundle=False,
    )
    parsed = parse_cart_order(body)
    assert isinstance(parsed, CartOrder)
    assert parsed.bundle is False
    assert [(f.archive_id, f.path, f.hashtype, f.hashsum) for f in parsed.files] == [
        ("foo.txt", "1/2/3/foo.txt", "md5", MD5_EMPTY),
        ("1234", "2/3/4/baz.ini", "sha256", SHA256_EMPTY),
    ]


@pytest.mark.parametrize(("top", "expected"), [({}, None), ({"bundle": True}, True)])
def test_bundle_is_optional(top: dict[str, Any], expected: bool | None) -> None:
    assert parse_cart_order(order(entry(), **top)).bundle is expected


def test_bundle_null_means_the_configured_default() -> None:
    assert parse_cart_order(order(entry(), bundle=None)).bundle is None


# paths


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/a/b.txt", "a/b.txt"),
        ("a//b.txt", "a/b.txt"),
        ("./a/./b.txt", "a/b.txt"),
        ("///x", "x"),
        ("a/b/", "a/b"),
        ("caf\u00e9/\u65e5\u672c.txt", "caf\u00e9/\u65e5\u672c.txt"),
        ("a..b/..c", "a..b/..c"),
    ],
)
def test_paths_are_normalized(path: str, expected: str) -> None:
    assert parse_cart_order(order(entry(path))).files[0].path == expected


@pytest.mark.parametrize("path", ["..", "../x", "a/../../x", "a/..", "/..", "a/b/../c"])
def test_path_leaving_the_bundle_is_refused(path: str) -> None:
    message = refused(order(entry("ok.txt", "f0"), entry(path, "f1")))
    assert "fileids[1]" in message
    assert ".." in message


@pytest.mark.parametrize("path", ["", "/", ".", "./", "//./"])
def test_empty_path_is_refused(path: str) -> None:
    message = refused(order(entry("ok.txt", "f0"), entry(path, "f1")))
    assert "fileids[1].path" in message
    assert "empty" in message


def test_path_with_control_character_is_refused() -> None:
    assert "fileids[0].path" in refused(order(entry("a\nb")))


def test_same_path_twice_is_refused() -> None:
    message = refused(order(entry("x/a.txt", "f0"), entry("/x//a.txt", "f1")))
    assert "fileids[1]" in message
    assert "fileids[0]" in message


@pytest.mark.parametrize(("first", "second"), [("a", "a/b"), ("a/b", "a"), ("a", "a/b/c")])
def test_file_where_another_needs_a_folder_is_refused(first: str, second: str) -> None:
    message = refused(order(entry(first, "f0"), entry(second, "f1")))
    assert "fileids[1]" in message
    assert "fileids[0]" in message
    assert "folder" in message


def test_sibling_paths_sharing_a_prefix_are_fine() -> None:
    parsed = parse_cart_order(order(entry("a", "f0"), entry("ab/c", "f1"), entry("a.d/e", "f2")))
    assert [f.path for f in parsed.files] == ["a", "ab/c", "a.d/e"]


# ids


@pytest.mark.parametrize(
    ("file_id", "expected"), [("foo.txt", "foo.txt"), (1234, "1234"), (0, "0")]
)
def test_ids_may_be_strings_or_integers(file_id: Any, expected: str) -> None:
    assert parse_cart_order(order(entry(file_id=file_id))).files[0].archive_id == expected


@pytest.mark.parametrize("file_id", [True, False, 1.5, None, [], {}, ""])
def test_other_ids_are_refused(file_id: Any) -> None:
    message = refused(order(entry("ok", "f0"), entry("b", file_id)))
    assert "fileids[1].id" in message


def test_same_id_at_two_paths_is_fine() -> None:
    parsed = parse_cart_order(order(entry("a", "same"), entry("b", "same")))
    assert [f.archive_id for f in parsed.files] == ["same", "same"]


# hashes


@pytest.mark.parametrize("hashtype", ["md5", "MD5", "Sha256", "sha1", "sha512", "blake2b"])
def test_hashlib_algorithms_are_accepted_case_insensitively(hashtype: str) -> None:
    name = hashtype.lower()
    digest = hashlib.new(name, b"").hexdigest()
    parsed = parse_cart_order(order(entry(hashtype=hashtype, hashsum=digest)))
    assert parsed.files[0].hashtype == name
    assert parsed.files[0].hashsum == digest


@pytest.mark.parametrize("hashtype", ["foo", "shake_128", "shake_256", "", 5, None, "sha-256"])
def test_unknown_hashtypes_are_refused(hashtype: Any) -> None:
    message = refused(order(entry("ok", "f0"), entry("b", "f1", hashtype=hashtype)))
    assert "fileids[1].hashtype" in message


def test_hashsum_upper_case_hex_is_accepted_and_lowered() -> None:
    parsed = parse_cart_order(order(entry(hashsum=MD5_EMPTY.upper())))
    assert parsed.files[0].hashsum == MD5_EMPTY


def test_empty_hashsum_is_accepted() -> None:
    assert parse_cart_order(order(entry(hashsum=""))).files[0].hashsum == ""


@pytest.mark.parametrize(
    "hashsum", [MD5_EMPTY[:-1], MD5_EMPTY + "0", SHA256_EMPTY, "z" * 32, " " + MD5_EMPTY[1:], 12]
)
def test_wrong_hashsums_are_refused(hashsum: Any) -> None:
    message = refused(order(entry("ok", "f0"), entry("b", "f1", hashsum=hashsum)))
    assert "fileids[1].hashsum" in message


# malformed bodies


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", "JSON"),
        (b"not json", "JSON"),
        (b"{", "JSON"),
        (b"\xff\xfe\xfa", "JSON"),
        (b"[]", "object"),
        (b'"fileids"', "object"),
        (b"null", "object"),
        (b"{}", "fileids"),
        (b'{"files": []}', "fileids"),
        (b'{"fileids": []}', "non-empty"),
        (b'{"fileids": {"id": 1}}', "list"),
        (b'{"fileids": "a"}', "list"),
    ],
)
def test_malformed_bodies_say_what_is_wrong(body: bytes, words: str) -> None:
    assert words in refused(body)


@pytest.mark.parametrize("bad", ["yes", 1, 0, "true", [], {}])
def test_bundle_must_be_a_boolean(bad: Any) -> None:
    assert "bundle" in refused(order(entry(), bundle=bad))


@pytest.mark.parametrize("bad", ["a.txt", 5, None, ["a", "b"]])
def test_entry_must_be_an_object(bad: Any) -> None:
    message = refused(order(entry("ok", "f0"), bad))
    assert "fileids[1]" in message
    assert "object" in message


@pytest.mark.parametrize("key", ["id", "path", "hashtype", "hashsum"])
def test_entry_missing_a_key_names_it(key: str) -> None:
    bad = entry("b", "f1")
    del bad[key]
    message = refused(order(entry("ok", "f0"), bad))
    assert "fileids[1]" in message
    assert key in message


def test_path_must_be_a_string() -> None:
    assert "fileids[0].path" in refused(order(entry(path=None)))  # type: ignore[arg-type]


def test_deeply_nested_body_is_a_400() -> None:
    with pytest.raises(InvalidRequest):
        parse_cart_order(b"[" * 100_000)


# validate_download_name


def test_no_name_gives_the_default() -> None:
    assert validate_download_name(None, "data_2024_01_02_03_04_05.tar") == (
        "data_2024_01_02_03_04_05.tar"
    )


@pytest.mark.parametrize(
    "name",
    ["data", "data.tar", "my data.tar", 'q"uote.tar', "caf\u00e9.tar", "\u65e5\u672c.tar", "..."],
)
def test_ordinary_and_unicode_names_are_kept(name: str) -> None:
    assert validate_download_name(name, "default.tar") == name


def test_name_of_exactly_255_bytes_is_kept() -> None:
    name = "\u00e9" * 127 + "x"  # 2 * 127 + 1 bytes in UTF-8
    assert validate_download_name(name, "d.tar") == name


@pytest.mark.parametrize(
    "name",
    [
        "a/b.tar",
        "/",
        "a\nb",
        "a\rb",
        "a\x00b",
        "tab\there",
        "del\x7f",
        "x" * 256,
        "\u00e9" * 128,  # 128 characters, 256 bytes
        ".",
        "..",
    ],
)
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidRequest, match="filename"):
        validate_download_name(name, "default.tar")


def test_c1_control_characters_are_refused_in_download_names() -> None:
    with pytest.raises(InvalidRequest):
        validate_download_name("a\u0085b.tar", "d.tar")


# text that is not Unicode: a lone surrogate, as JSON can write it


@pytest.mark.parametrize("field", ["id", "path", "hashtype", "hashsum"])
def test_a_lone_surrogate_in_a_field_is_refused_naming_it(field: str) -> None:
    bad = entry("b", "f1")
    bad[field] = "SURROGATE"
    body = order(entry("ok", "f0"), bad).replace(b'"SURROGATE"', b'"a\\ud800b"')
    message = refused(body)
    assert f"fileids[1].{field}" in message
    message.encode("utf-8")  # the message itself can be sent


def test_a_lone_surrogate_in_an_ignored_key_is_ignored() -> None:
    body = order(entry(note="SURROGATE")).replace(b'"SURROGATE"', b'"\\udc00"')
    assert parse_cart_order(body).files[0].path == "a.txt"


def test_a_surrogate_pair_is_ordinary_text() -> None:
    body = order(entry("SURROGATE")).replace(b'"SURROGATE"', b'"\\ud83d\\ude00.txt"')
    assert parse_cart_order(body).files[0].path == "\U0001f600.txt"


def test_a_download_name_that_is_not_unicode_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="filename"):
        validate_download_name("a\ud800.tar", "d.tar")


# lengths in bytes: every accepted cart unpacks under a top folder of 255 bytes

TAIL_1072 = "/".join(["z" * 200] * 5) + "/" + "z" * 67


@pytest.mark.parametrize(
    "path",
    [
        "x" * 255,
        "\u00e9" * 127 + "x",  # 255 bytes in 128 characters
        "/".join(["y" * 255] * 12),  # 3071 bytes
        "/".join(["\u65e5" * 85] * 12),  # 3071 bytes of 3-byte characters
        "./" * 1000 + TAIL_1072,  # 3072 bytes as sent, 1072 once normalized
    ],
)
def test_paths_up_to_the_byte_limits_are_accepted(path: str) -> None:
    assert parse_cart_order(order(entry(path))).files[0].path == path.replace("./", "")


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("x" * 256, "segment over 255 bytes"),
        ("a/" + "\u00e9" * 128 + "/b", "segment over 255 bytes"),
        ("/".join(["y" * 255] * 12) + "/zz", "over 3072 bytes"),
        ("\u65e5" * 1025, "over 3072 bytes"),  # 1025 characters, 3075 bytes
        ("./" * 1000 + TAIL_1072 + "z", "over 3072 bytes"),
    ],
)
def test_paths_over_the_byte_limits_are_refused(path: str, words: str) -> None:
    message = refused(order(entry("ok", "f0"), entry(path, "f1")))
    assert "fileids[1].path" in message
    assert words in message
    assert len(message) < 600


# ids that would leave the archive's folder


@pytest.mark.parametrize(
    "file_id",
    [
        "..",
        "../etc/passwd",
        "a/../../b",
        "a/..",
        "a\\..\\b",
        "..\\x",
        "/etc/passwd",
        "/",
        "%2e%2e",
        "%2E%2E%2Fetc",
        "%2e%2e%2f",
        "a%2f..%2fb",
        "a%5c..%5cb",
        "%252e%252e",
        "%25252e%25252e%25252fx",
        "%2Fetc/passwd",
        "%252F",
        ".%2e/x",
    ],
)
def test_an_id_leaving_the_archive_folder_is_refused(file_id: str) -> None:
    message = refused(order(entry("ok", "f0"), entry("b", file_id)))
    assert "fileids[1].id" in message
    assert "leave the archive's folder" in message


@pytest.mark.parametrize(
    "file_id",
    ["a..b", "..a", "a..", "...", "a/b/c", "a%2Fb", "100%", "%zz", "%", "a\\b", "a/./b"],
)
def test_ids_that_stay_inside_are_accepted(file_id: str) -> None:
    assert parse_cart_order(order(entry(file_id=file_id))).files[0].archive_id == file_id


@pytest.mark.parametrize(
    ("file_id", "expected"),
    [
        (-5, "-5"),
        (10**1024 - 1, "9" * 1024),
        (-(10**1023 - 1), "-" + "9" * 1023),
    ],
)
def test_integer_ids_of_up_to_1024_characters_are_accepted(file_id: int, expected: str) -> None:
    assert parse_cart_order(order(entry(file_id=file_id))).files[0].archive_id == expected


@pytest.mark.parametrize(("file_id"), [10**1024, -(10**1023), "x" * 1025])
def test_ids_over_1024_characters_are_refused(file_id: Any) -> None:
    assert "fileids[1].id" in refused(order(entry("ok", "f0"), entry("b", file_id)))


def test_an_integer_too_long_for_python_is_a_400() -> None:
    body = b'{"fileids": [{"id": ' + b"7" * 5000 + b', "path": "a", "hashtype": "md5",'
    assert "JSON" in refused(body + b' "hashsum": ""}]}')


def test_a_file_id_key_other_than_id_is_ignored() -> None:
    parsed = parse_cart_order(order(entry(file_id="real", archive_id="other")))
    assert parsed.files[0].archive_id == "real"


# a large order: every file is checked, to the last (its speed is bench/run.py's to measure)


def test_an_order_of_100000_files_is_checked_to_its_last_file() -> None:
    files = [entry(f"d{i % 100}/s{i % 7}/f{i}.dat", f"id{i}") for i in range(100_000)]
    assert len(parse_cart_order(order(*files)).files) == 100_000
    clash = entry("d0/s0/f0.dat", "another")
    with pytest.raises(InvalidRequest, match=r"d0/s0/f0\.dat"):
        parse_cart_order(order(*files, clash))


# the JSON Schema patterns say what the validators do


@pytest.mark.parametrize(
    "path",
    ["a", "/a/b", "a//b", "./a", "...", "a..b", ".a", "a/.b", "", "/", ".", "./", "//./", "..",
     "../x", "a/..", "a/../b", "a\nb", "a\x85b", "a\x7fb", "caf\u00e9/x", "a\\b", "..\\x"],
)  # fmt: skip
def test_the_path_pattern_agrees_with_the_validator(path: str) -> None:
    try:
        parse_cart_order(order(entry(path)))
        accepted = True
    except InvalidRequest:
        accepted = False
    assert (re.search(PATH_PATTERN, path) is not None) == accepted


@pytest.mark.parametrize(
    "file_id",
    ["a", "a..b", "..a", "a\\b", "a/b", "%2e", "..", "a/..", "a\\..", "..\\b", "/a", "\\a",
     "a\tb", "a\x9fb", "x/../y"],
)  # fmt: skip
def test_the_id_pattern_agrees_with_the_validator(file_id: str) -> None:
    try:
        parse_cart_order(order(entry(file_id=file_id)))
        accepted = True
    except InvalidRequest:
        accepted = False
    assert (re.search(ID_PATTERN, file_id) is not None) == accepted


@pytest.mark.parametrize("hashtype", ["md5", "MD5", "sHa256", "blake2b", "sha3_256", "md5-sha1"])
def test_every_accepted_hashtype_matches_the_pattern(hashtype: str) -> None:
    assert re.fullmatch(HASHTYPE_PATTERN, hashtype)


@pytest.mark.parametrize("hashtype", ["md6", "sha-256", "shake_128", "md5 ", "\u212aeccak"])
def test_no_refused_hashtype_matches_the_pattern(hashtype: str) -> None:
    assert not re.search(HASHTYPE_PATTERN, hashtype)


@pytest.mark.parametrize("path", ["a\\b", "..\\..\\evil.txt", "x\\..\\..\\y.txt", "\\"])
def test_a_backslash_in_a_path_is_refused(path: str) -> None:
    with pytest.raises(InvalidRequest, match=r"fileids\[0\]\.path .* must not contain"):
        parse_cart_order(order(entry(path)))


# bodies pydantic's own JSON reader refuses, read again by Python's as the original did


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32-be"])
def test_an_order_in_another_unicode_encoding_is_read(encoding: str) -> None:
    body = order(entry("d\u00e9j\u00e0/a.txt")).decode("ascii").encode(encoding)
    assert parse_cart_order(body).files[0].path == "d\u00e9j\u00e0/a.txt"


def test_nan_in_an_ignored_key_is_ignored() -> None:
    body = order(entry(note="NOTE")).replace(b'"NOTE"', b"NaN")
    assert parse_cart_order(body).files[0].path == "a.txt"
