"""What of an archive's error answer reaches a cart's error (and so a client)."""

from __future__ import annotations

import json

import pytest

from cartd.archive.http import describe_failure, without_paths


@pytest.mark.parametrize(
    ("said", "shown"),
    [
        (
            "Can't open posix file with error: [Errno 2] No such file or directory:"
            " '/srv/archive/ab/cd'",
            "Can't open posix file with error: [Errno 2] No such file or directory: <path>",
        ),
        ('open("/var/lib/archive/x") failed', "open(<path>) failed"),
        ("cannot read /data/tape/0042 now", "cannot read <path> now"),
        ("see http://archive.example/ab for help", "see http://archive.example/ab for help"),
        ("a/b ratio of 1/2", "a/b ratio of 1/2"),
        ("nothing to hide", "nothing to hide"),
    ],
)
def test_server_paths_are_left_out(said: str, shown: str) -> None:
    assert without_paths(said) == shown


def test_the_last_line_of_a_traceback_is_the_cause_without_its_path() -> None:
    body = json.dumps(
        {
            "status": "500 Internal Server Error",
            "message": "The server encountered an unexpected condition",
            "traceback": 'Traceback (most recent call last):\n  File "/usr/lib/x.py"\n'
            "ArchiveInterfaceError: Can't open posix file with error: [Errno 2]"
            " No such file or directory: '/srv/a/f1'\n",
        }
    ).encode()
    described = describe_failure(500, body)
    assert described.startswith("archive answered 500: ArchiveInterfaceError: Can't open")
    assert "/srv" not in described
    assert "x.py" not in described
