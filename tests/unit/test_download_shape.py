"""What a download is made as, without HTTP: its name and top folder per format, and its
manifests (one per hash type, BagIt style, checkable with coreutils)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cartd.bundle import LAYOUT_VERSION
from cartd.errors import InvalidRequest
from cartd.records import Cart, CartFile
from cartd.schemas import Packing
from cartd.service.carts import TAR, Shape, content_tag, download_name
from cartd.service.manifest import manifests
from cartd.status import CartStatus, FileStatus

DEFAULT = "data_2026_01_02_03_04_05"
CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("filename", "packing", "expected"),
    [
        ("", Packing.TAR, (f"{DEFAULT}.tar", DEFAULT)),
        ("", Packing.ZIP, (f"{DEFAULT}.zip", DEFAULT)),
        ("run7.tar", Packing.TAR, ("run7.tar", "run7")),
        ("run7.zip", Packing.TAR, ("run7.zip", "run7.zip")),
        ("run7.zip", Packing.ZIP, ("run7.zip", "run7")),
        ("run7.tar", Packing.ZIP, ("run7.zip", "run7")),
        ("run7", Packing.ZIP, ("run7", "run7")),
        (".tar", Packing.ZIP, (".tar", ".tar")),
        ("a.tar.tar", Packing.ZIP, ("a.tar.zip", "a.tar")),
    ],
)
def test_a_zip_has_the_top_folder_the_tar_of_that_name_has(
    filename: str, packing: Packing, expected: tuple[str, str]
) -> None:
    assert download_name(filename, f"{DEFAULT}{packing.ending}", packing) == expected


@pytest.mark.parametrize("filename", ["..zip", "a\\b.zip", "C:x.zip"])
def test_a_zip_name_whose_top_folder_would_escape_is_refused(filename: str) -> None:
    with pytest.raises(InvalidRequest, match="filename"):
        download_name(filename, "x.zip", Packing.ZIP)


def test_only_other_shapes_than_the_plain_tar_change_the_tag() -> None:
    assert TAR.variant == []
    variants = [Shape(Packing.ZIP).variant, Shape(manifests=True).variant]
    variants.append(Shape(Packing.ZIP, manifests=True).variant)
    assert all(variants)
    assert len({tuple(variant) for variant in variants}) == 3


def cart_file(number: int, path: str, data: bytes, hashtype: str) -> CartFile:
    digest = hashlib.new(hashtype, data).hexdigest()
    return CartFile(
        number, 1, f"id{number}", path, hashtype, digest, FileStatus.STAGED, 1, 0.0, 0, 0, None
    )


FILES = {
    "b/two.bin": (b"two", "sha256"),
    "a.txt": (b"one", "md5"),
    "d\u00e9j\u00e0 vu/trois.txt": (b"three", "sha256"),
    "sp ace/*star": (b"four", "sha256"),
}


def test_one_manifest_per_hash_type_each_file_in_the_orders_order(tmp_path: Path) -> None:
    files = [cart_file(n, path, data, kind) for n, (path, (data, kind)) in enumerate(FILES.items())]
    found = manifests(files, 1_700_000_000)
    assert [inline.path for inline in found] == ["manifest-md5.txt", "manifest-sha256.txt"]
    assert {inline.mtime for inline in found} == {1_700_000_000}
    sha256 = found[1].data.decode()
    assert sha256.splitlines() == [
        f"{hashlib.sha256(data).hexdigest()}  {path}"
        for path, (data, kind) in FILES.items()
        if kind == "sha256"
    ]
    # As coreutils reads it, from the top folder.
    for path, (data, _) in FILES.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(data)
    for inline in found:
        (tmp_path / inline.path).write_bytes(inline.data)
    for tool, name in (("md5sum", "manifest-md5.txt"), ("sha256sum", "manifest-sha256.txt")):
        done = subprocess.run([tool, "-c", name], cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("path", ["manifest-md5.txt", "manifest-md5.txt/inside.bin"])
def test_a_file_where_a_manifest_would_go_is_refused(path: str) -> None:
    files = [cart_file(1, path, b"x", "md5")]
    with pytest.raises(InvalidRequest, match="manifest"):
        manifests(files, 0)
    assert manifests([cart_file(1, path, b"x", "sha1")], 0), "another hash type's name is free"


@pytest.mark.parametrize("variant", [[], ["zip", "manifests"]])
def test_a_download_keeps_the_tag_earlier_versions_gave_it(variant: list[str]) -> None:
    """The tag is hashed a file at a time now; a client resuming a download begun under
    an earlier version must still see the same tag (its `If-Range` would fail)."""
    cart = Cart(7, "run", CartStatus.READY, False, None, CREATED, CREATED, CREATED, None)
    files = [
        cart_file(number, path, data, hashtype)
        for number, (path, (data, hashtype)) in enumerate(FILES.items(), 1)
    ]
    identity: list[object] = [LAYOUT_VERSION, 7, "run", "top", int(CREATED.timestamp()), 99]
    identity += [[f.path, f.size, int(f.mtime or 0), f.hashtype, f.hashsum] for f in files]
    if variant:
        identity.append(variant)
    earlier = hashlib.sha256(json.dumps(identity).encode("ascii")).hexdigest()[:32]
    assert content_tag(cart, files, "top", 99, variant) == f'"{earlier}"'
