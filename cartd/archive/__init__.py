"""The archive port: the one seam through which cartd reaches the files it serves.

Adapters are chosen by the URL's scheme: `http(s)://` is a Pacifica Archive
Interface, `file://` a folder on a mounted filesystem.
"""

from __future__ import annotations

from cartd.archive.base import Archive, ArchiveFile
from cartd.archive.factory import open_archive

__all__ = ["Archive", "ArchiveFile", "open_archive"]
