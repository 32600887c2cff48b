"""Which kernels' `syncfs` cartd relies on to report a failed write-back."""

from __future__ import annotations

import pytest

from cartd.libc import _reports_writeback_errors


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
