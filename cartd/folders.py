"""The folder layout every download format shares: one top folder, each file at
`<top>/<path>` as every extractor will read it, each folder before what it holds.

The tar (`cartd.bundle`) and the zip (`cartd.zip_layout`) encode the same walk, so a
cart unpacks to the same tree whichever a person asks for.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cartd.errors import UnsafeName

#: Most bytes one file name may have on common filesystems (NAME_MAX).
NAME_MAX = 255
_DRIVE = re.compile(r"[A-Za-z]:")


@dataclass(frozen=True, slots=True)
class Entry:
    """One staged file to put in the download."""

    path: str  # inside the top folder
    size: int
    mtime: float
    source: str | os.PathLike[str]  # a string for the many files of a large cart


@dataclass(frozen=True, slots=True)
class Inline:
    """A small file made by cartd itself (a manifest), put right after the top folder."""

    path: str  # inside the top folder
    data: bytes
    mtime: float


@dataclass(frozen=True, slots=True)
class Node:
    """One member of the walk: a folder (`item` None), a staged file (with its `index` in
    the entries given) or an inline file."""

    name: str
    item: Entry | Inline | None = None
    index: int = -1


def top_folder(name: str, ending: str = ".tar") -> str:
    """The top folder for a download named `name`: the name without its `ending`. Raises
    `UnsafeName` for one an extractor would not keep as one folder of the place it
    extracts into."""
    top = name[: -len(ending)] if name.endswith(ending) and name != ending else name
    if top in {"", ".", ".."}:
        raise UnsafeName(f"{name!r} would make the top folder {top!r}")
    if "/" in top or "\\" in top:
        raise UnsafeName("'/' and '\\' separate folders for some extractors")
    if _DRIVE.match(top):
        raise UnsafeName("a name starting with a drive letter ('C:') is absolute on Windows")
    if len(top.encode("utf-8", "surrogatepass")) > NAME_MAX:
        raise UnsafeName(f"the top folder would be longer than {NAME_MAX} bytes")
    return top


def member_path(path: str) -> str:
    """A file's path below the top folder as every extractor will read it.

    An order's path has no empty, `.` or `..` segment (they are refused before it is
    stored), and is raised here if it ever did. A backslash, an ordinary character for
    POSIX but a separator for Windows extractors, becomes `_`; a segment longer than a
    file name may be is shortened, keeping its extension, with a digest of the whole
    segment so that two long names stay apart.
    """
    parts = path.split("/")
    if any(part in {"", ".", ".."} for part in parts):
        raise UnsafeName(f"{path!r} has an empty, '.' or '..' segment")
    return "/".join(_segment(part.replace("\\", "_")) for part in parts)


def _segment(part: str) -> str:
    encoded = part.encode("utf-8", "surrogatepass")
    if len(encoded) <= NAME_MAX:
        return part
    stem, dot, extension = part.rpartition(".")
    keep = f".{extension}" if dot and stem and len(extension.encode()) <= 16 else ""
    suffix = f"~{hashlib.sha256(encoded).hexdigest()[:16]}{keep}"
    room = NAME_MAX - len(suffix.encode("utf-8", "surrogatepass"))
    head, size = [], 0
    for character in part:
        size += len(character.encode("utf-8", "surrogatepass"))
        if size > room:
            break
        head.append(character)
    return "".join(head) + suffix


def walk(top: str, entries: Iterable[Entry], inline: Iterable[Inline] = ()) -> Iterator[Node]:
    """The members in order: the top folder, the inline files, then each staged file in
    the order given, each folder before what it holds. Every name is `top` or below it,
    whatever the paths (`member_path`)."""
    yield Node(top)
    folders = {top}
    # Read as they come: the entries of a large cart are made one at a time.
    items: Iterable[tuple[int, Entry | Inline]] = itertools.chain(
        ((-1, item) for item in inline), enumerate(entries)
    )
    for index, item in items:
        parts = member_path(item.path).split("/")
        for depth in range(1, len(parts)):
            folder = "/".join([top, *parts[:depth]])
            if folder not in folders:
                folders.add(folder)
                yield Node(folder)
        yield Node("/".join([top, *parts]), item, index)
