"""The README is a tested artefact: every setting and command is documented there."""

from __future__ import annotations

from pathlib import Path

import pytest

from cartd.cli import build_parser
from cartd.config import KEYS, Key

README = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("key", KEYS, ids=[key.name for key in KEYS])
def test_every_setting_is_in_the_readme_table(key: Key) -> None:
    rows = [line for line in README.splitlines() if line.startswith(f"| `{key.name}` ")]
    assert rows, f"{key.name} is not documented in README.md"
    assert f"`{key.env}`" in rows[0], f"{key.name}'s environment variable is not documented"
    for alias in key.aliases:
        assert f"`{alias}`" in rows[0], f"{key.name}'s older name {alias} is not documented"


def test_every_command_is_in_the_readme() -> None:
    parser = build_parser()
    subcommands = next(action for action in parser._actions if action.dest == "command").choices
    assert subcommands
    for name in subcommands:
        assert f"`cartd {name}" in README, f"cartd {name} is not documented in README.md"
