"""The volume's layout: two pulls of one file never share a partial file."""

from __future__ import annotations

import os
from pathlib import Path

from cartd.durable import DurableFile
from cartd.storage import Volume


def test_two_pulls_of_one_file_write_apart_and_a_ready_cart_keeps_no_partial(
    tmp_path: Path,
) -> None:
    volume = Volume(tmp_path)
    volume.prepare()
    first, second = volume.partial_path(7, 42), volume.partial_path(7, 42)
    assert first != second
    assert first.parent == second.parent
    first.write_bytes(b"left by a pull that died")
    volume.clear_partials(7)
    assert not first.parent.exists()


def test_the_string_paths_of_the_hot_path_are_the_paths(tmp_path: Path) -> None:
    volume = Volume(tmp_path / "volume")
    assert volume.file_name(7, 42) == os.fspath(volume.file_path(7, 42))
    assert list(volume.file_names(7, [1, 42])) == [volume.file_name(7, 1), volume.file_name(7, 42)]
    pull = volume.partial_name(7, 42)
    assert os.path.dirname(pull) == os.fspath(volume.cart_dir(7) / "partial")
    with DurableFile(pull) as out:  # makes the folder of a cart's first pull
        out.commit(sync=False)
    assert volume.partials(7, 42) == [Path(pull)]
    assert volume.partials(7, 4) == [], "another file's pulls are not this one's"


def test_a_forked_worker_names_its_pulls_apart_from_its_parent(tmp_path: Path) -> None:
    """Celery's prefork workers are forked from one parent: their pulls of one file must
    never share a name (each would write into the other's)."""
    volume = Volume(tmp_path / "volume")
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child's)
        os.write(write, volume.partial_name(7, 42).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    theirs = os.read(read, 4096).decode()
    os.close(read)
    ours = {volume.partial_name(7, 42) for _ in range(3)}
    assert len(ours) == 3
    assert theirs not in ours
    assert theirs.split(".")[:3] != volume.partial_name(7, 42).split(".")[:3]
