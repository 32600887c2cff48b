"""Reading the tars cartd serves, as a client would."""

from __future__ import annotations

import io
import tarfile


def tar_files(data: bytes) -> dict[str, bytes]:
    """Every regular file of a tar, by its name in the tar."""
    found = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for info in tar.getmembers():
            handle = tar.extractfile(info) if info.isfile() else None
            if handle is not None:
                found[info.name] = handle.read()
    return found
