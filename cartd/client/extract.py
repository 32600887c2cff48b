"""Unpacking a verified tar, safely whatever it holds.

Each file lands at `DIR/<path>`, where the order put it: the tar's one top folder is left
out (the person chose DIR instead). Python's tarfile `data` filter then refuses members
that would land outside DIR, links pointing out of it, and device files, and drops
set-uid bits and the tar's owners.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from cartd.client.errors import ExtractFailed


def _below_top(name: str) -> str:
    return name.partition("/")[2]


def _without_top(member: tarfile.TarInfo, folder: str) -> tarfile.TarInfo | None:
    """The member one folder up (None for the top folder itself), then the `data` filter."""
    name = _below_top(member.name.rstrip("/"))
    if not name:
        return None
    # A hard link names another member, from the tar's root.
    linkname = _below_top(member.linkname) if member.islnk() else member.linkname
    return tarfile.data_filter(member.replace(name=name, linkname=linkname, deep=False), folder)


def extract(tar_path: Path, folder: Path) -> None:
    """Unpack `tar_path` into `folder` (made if need be), without the tar's top folder."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tar_path, mode="r:") as tar:
            tar.extractall(folder, filter=_without_top)  # noqa: S202 (the data filter runs)
    except tarfile.TarError as exc:
        raise ExtractFailed(f"cannot unpack {tar_path} into {folder}: {exc}") from None
    except OSError as exc:
        raise ExtractFailed(
            f"cannot unpack {tar_path} into {folder}: {exc.strerror} ({exc.filename})"
        ) from None
