"""The volume's layout: two pulls of one file never share a partial file."""

from __future__ import annotations

from pathlib import Path

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
