"""The manifests a download may open with (`?manifest=1`), so that a person checks it
offline with standard tools.

One file `manifest-<hashtype>.txt` per hash type of the order, in the top folder, BagIt
style: one line per file of that type, in the order's order, `<checksum>  <path>`, the
path as the member is named in the archive below the top folder. That is also the form
of `sha256sum`, `md5sum` and their kin, so `cd <top> && sha256sum -c manifest-sha256.txt`
checks every file. An order's paths hold no control character and no backslash, so no
line needs the escapes either format has for them.
"""

from __future__ import annotations

from collections.abc import Sequence

from cartd.errors import InvalidRequest
from cartd.folders import Inline, member_path
from cartd.records import CartFile

#: Part of the ETag of a download with manifests: a change of their form changes it.
MANIFEST_VERSION = "1"


def manifest_name(hashtype: str) -> str:
    return f"manifest-{hashtype}.txt"


def manifests(files: Sequence[CartFile], mtime: float) -> list[Inline]:
    """The manifests of a cart's files, by hash type in alphabetical order. Raises
    `InvalidRequest` for a cart with a file (or folder) where a manifest would go."""
    lines: dict[str, list[str]] = {}
    paths = []
    for file in files:
        path = member_path(file.path)
        paths.append(path)
        lines.setdefault(file.hashtype, []).append(f"{file.hashsum}  {path}\n")
    names = {manifest_name(hashtype) for hashtype in lines}
    for path in paths:
        if path.split("/", 1)[0] in names:
            raise InvalidRequest(
                f"the cart has {path!r} where its manifest would go: download it without manifest=1"
            )
    return [
        Inline(manifest_name(hashtype), "".join(lines[hashtype]).encode("utf-8"), mtime)
        for hashtype in sorted(lines)
    ]
