"""The cache volume: where a cart's verified files, partial pulls and bundle live.

Layout: `<volume>/carts/<cart id>/files/<file id>` for verified files,
`.../partial/<file id>.<pid>.<random>` while a pull is under way, `.../bundle.tar` for a
bundled cart. Files are kept by id, not by their path in the bundle, so a
requester's path never becomes a path on our disk.
"""

from __future__ import annotations

import itertools
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

from cartd.lazy import Computed
from cartd.libc import filesystem_type, sync_filesystem
from cartd.segments import FilePath, unchanged


class Volume:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.carts = root / "carts"
        self._carts = os.fspath(self.carts)
        self._syncs_whole: bool | None = None  # known at the first `group_sync`

    def prepare(self) -> None:
        self.carts.mkdir(parents=True, exist_ok=True)

    def free_bytes(self) -> int:
        """Free space of the volume's filesystem, as an unprivileged writer sees it."""
        return shutil.disk_usage(self.root).free

    def cart_dir(self, cart_id: int) -> Path:
        return self.carts / str(cart_id)

    def file_path(self, cart_id: int, file_id: int) -> Path:
        return Path(self.file_name(cart_id, file_id))

    def file_names(self, cart_id: int, file_ids: Sequence[int]) -> FileNames:
        """`file_name` of many files of a cart, each made when asked for: a download's
        layout needs one for each of its files, and holding 100,000 of them costs ten
        megabytes."""
        return FileNames(self, cart_id, file_ids)

    def file_name(self, cart_id: int, file_id: int) -> str:
        """`file_path` as a string: a pull's own steps use it, a `Path` made for every
        file of a 100,000-file cart costing more than the rest of a small file's step."""
        return f"{self._carts}/{cart_id}/files/{file_id}"  # a third of `os.path.join`'s CPU

    def holds(self, cart_id: int, file_id: int, size: int, mtime: float) -> bool:
        """Whether the file's verified copy is in place, still as it was verified at `size`
        bytes modified at `mtime` (`cartd.segments.unchanged`): one `stat`."""
        try:
            stat = os.stat(self.file_name(cart_id, file_id))
        except FileNotFoundError:
            return False
        return unchanged(stat, size, mtime)

    def partial_name(self, cart_id: int, file_id: int) -> str:
        """`partial_path` as a string (see `file_name`); its folder is made by the first
        file written there (`cartd.durable.DurableFile`)."""
        return os.path.join(self._partials_folder(cart_id), f"{file_id}.{_pulls.name()}")

    def partial_path(self, cart_id: int, file_id: int) -> Path:
        """Where one pull writes a file before it is verified: a name of its own, so that
        two pulls of one file (a claim that lapsed while the database was away) never
        write into each other; each moves a whole verified file into place. Its folder
        exists once this returns."""
        name = self.partial_name(cart_id, file_id)
        os.makedirs(os.path.dirname(name), exist_ok=True)
        return Path(name)

    def partials(self, cart_id: int, file_id: int) -> list[Path]:
        """The pulls of a file under way (`partial_path`), oldest name first."""
        folder = Path(self._partials_folder(cart_id))
        prefix = f"{file_id}."
        try:
            names = sorted(
                entry.name for entry in os.scandir(folder) if entry.name.startswith(prefix)
            )
        except FileNotFoundError:
            return []
        return [folder / name for name in names]

    def clear_partials(self, cart_id: int) -> None:
        """Remove what unfinished pulls of a cart left behind."""
        shutil.rmtree(self._partials_folder(cart_id), ignore_errors=True)

    def _partials_folder(self, cart_id: int) -> str:
        return os.path.join(self._carts, str(cart_id), "partial")

    def bundle_path(self, cart_id: int) -> Path:
        return self.cart_dir(cart_id) / "bundle.tar"

    def commit(self, partial: FilePath, final: FilePath, *, sync: bool = True) -> None:
        """Move a verified file into place; a reader sees all of it or nothing.

        With `sync=False` the move is not yet durable: the caller syncs the folder
        (`sync_folder`) once for a group of files before recording them verified.
        """
        folder = os.path.dirname(os.fspath(final))
        try:
            os.replace(partial, final)
        except FileNotFoundError:  # the cart's first file in place (or `partial` is gone)
            os.makedirs(folder, exist_ok=True)
            os.replace(partial, final)
        if sync:
            _fsync_dir(folder)

    def sync_folder(self, path: FilePath) -> None:
        """Make the moves into a folder durable."""
        _fsync_dir(path)

    def group_sync(self) -> VolumeSync | None:
        """A `VolumeSync` made now, for files about to be written; None where the
        filesystem cannot be synced whole with its errors reported (then each file and
        folder is synced on its own)."""
        if self._syncs_whole is None:
            self._syncs_whole = sync_filesystem is not None and syncs_whole(
                filesystem_type(self._carts)
            )
        return VolumeSync(self._carts) if self._syncs_whole else None

    def adopt(self, source: Path, final: Path) -> None:
        """Give `final` the bytes of `source` (a file the original Pacifica Cartd left on
        the volume), leaving `source` where it is: a hard link, sharing the bytes rather
        than copying them, else (another filesystem) a copy with its modification time.
        Neither side ever writes such a file in place: cartd replaces a file by a move."""
        final.parent.mkdir(parents=True, exist_ok=True)
        final.unlink(missing_ok=True)  # left by an import that did not commit
        try:
            os.link(source, final)
        except OSError:
            partial = final.with_name(f".{final.name}.{uuid.uuid4().hex}")
            try:
                shutil.copy2(source, partial)
                os.replace(partial, final)
            finally:
                partial.unlink(missing_ok=True)
        _fsync_dir(final.parent)

    def remove_cart(self, cart_id: int) -> None:
        shutil.rmtree(self.cart_dir(cart_id), ignore_errors=True)


#: Filesystems on a local disk, by `statfs` magic number, whose `syncfs` writes back
#: every file and reports write-back errors: ext2/3/4, XFS, Btrfs, F2FS, ZFS, and tmpfs
#: (nothing to write back). A network filesystem (NFS, CIFS, Lustre, CephFS) keeps an
#: fsync per file: what its `syncfs` promises was not checked.
LOCAL_FILESYSTEMS = frozenset({0xEF53, 0x58465342, 0x9123683E, 0xF2F52010, 0x2FC12FC1, 0x01021994})


def syncs_whole(filesystem: int | None) -> bool:
    """Whether the volume's files are made durable a group at a time (`VolumeSync`)."""
    return filesystem in LOCAL_FILESYSTEMS


class _PullNames:
    """Names for pulls, unique among every process that ever writes to the volume (on
    any host sharing it): this process's id and a random tag, made once (again in a
    forked child), then a count. A random name made for each pull cost two system calls
    (the process id, the random bytes), for every file of a cart of 100,000."""

    def __init__(self) -> None:
        self._renew()
        os.register_at_fork(after_in_child=self._renew)

    def _renew(self) -> None:
        self._tag = f"{os.getpid()}.{uuid.uuid4().hex}"
        self._count = itertools.count()

    def name(self) -> str:
        return f"{self._tag}.{next(self._count)}"


_pulls = _PullNames()


class FileNames(Computed[str]):
    """`Volume.file_name` of a cart's files, by their index in `file_ids`."""

    def __init__(self, volume: Volume, cart_id: int, file_ids: Sequence[int]) -> None:
        self._volume, self._cart_id, self._file_ids = volume, cart_id, file_ids

    def __len__(self) -> int:
        return len(self._file_ids)

    def item(self, index: int) -> str:
        return self._volume.file_name(self._cart_id, self._file_ids[index])


class VolumeSync:
    """Makes many small files durable with one call instead of an fsync each.

    On this 2-core VM an fsync of a new 1 KiB file cost about 0.2 ms: a fifth of a
    small file's whole pull, the largest part of it. `syncfs` writes back every file of
    the volume's filesystem and its folders' moves at once, and reports any write-back
    error met since this object was made: made before the group's first file is
    written, it can never miss a failure of one of them (it may report another's,
    which only makes the group be pulled again).

    It also writes back what other programs wrote to that filesystem, so a volume
    sharing one with busy writers makes each group wait for them too. An fsync on
    ext4 (ordered data) already does much the same. Measured on the benchmark's
    100,000 x 1 KiB cart (time to ready): an fsync per file, 89 to 96 s; `syncfs` per
    group, 64 s. Later, with other costs cut: `syncfs` 60 s, against 70 s for the way
    that touches only our files (each file's write-back started as it closes, then an
    fsync of each at the group's end).
    """

    def __init__(self, folder: str) -> None:
        self._descriptor: int | None = os.open(folder, os.O_RDONLY)

    def sync(self) -> None:
        """Raises `OSError` if writing back anything since this was made failed."""
        assert self._descriptor is not None, "used after close"
        assert sync_filesystem is not None
        sync_filesystem(self._descriptor)

    def close(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None


def _fsync_dir(path: FilePath) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
