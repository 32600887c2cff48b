"""Which kernels and filesystems cartd relies on `syncfs` for, to write back many small
files at once and report a failed write-back."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cartd.libc import _reports_writeback_errors, filesystem_type
from cartd.storage import syncs_whole


@pytest.mark.parametrize(
    ("release", "reports"),
    [
        ("6.18.44-fc-v857", True),
        ("5.8.0", True),
        ("5.10.0-28-amd64", True),
        ("5.7.19", False),
        ("4.19.0-26-amd64", False),
        ("3", False),
        ("", False),
        ("unknown", False),
    ],
)
def test_only_kernels_from_5_8_report_write_back_errors(release: str, reports: bool) -> None:
    assert _reports_writeback_errors(release) is reports


def test_the_filesystem_type_is_the_one_stat_tells(tmp_path: Path) -> None:
    told = subprocess.run(
        ["stat", "-f", "-c", "%t", str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert filesystem_type(str(tmp_path)) == int(told.stdout, 16)
    assert filesystem_type(str(tmp_path / "nowhere")) is None


@pytest.mark.parametrize(
    ("filesystem", "together"),
    [(0xEF53, True), (0x58465342, True), (0x01021994, True), (0x6969, False), (None, False)],
    ids=["ext4", "xfs", "tmpfs", "nfs", "unknown"],
)
def test_only_local_filesystems_sync_small_files_a_group_at_a_time(
    filesystem: int | None, together: bool
) -> None:
    assert syncs_whole(filesystem) is together
