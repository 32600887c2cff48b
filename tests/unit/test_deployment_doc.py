"""docs/deployment.md, docs/migrating.md and docs/compose.yaml are tested artefacts: every
`cartd` command (and the original's `pacifica-cartd`, `pacifica-cartd-cmd`) they run exists
with the options given, and every setting they name is one cartd reads."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from cartd.cli import build_legacy_parser, build_parser
from cartd.config import KEYS
from cartd.serving import CPCONFIG_ENV, HINTS, HONOURED

DOCS = Path(__file__).parents[2] / "docs"
DEPLOYMENT = (DOCS / "deployment.md").read_text(encoding="utf-8")
MIGRATING = (DOCS / "migrating.md").read_text(encoding="utf-8")
#: The guides read as one: each name of a command or setting in either is checked.
GUIDE = DEPLOYMENT + "\n" + MIGRATING
COMPOSE = (DOCS / "compose.yaml").read_text(encoding="utf-8")
README = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")

#: Commands the guide describes ahead of the code, each with where it comes from. Once one
#: exists, `test_pending_commands_are_still_pending` fails: move it out of here.
PENDING: dict[str, str] = {}
#: Environment variables read by cartd outside `cartd.config.KEYS`.
PROCESS_ENV = {"CARTD_CONFIG", CPCONFIG_ENV, "CARTD_LOG_LEVEL", "CARTD_LOG_FORMAT"}
#: The original's CherryPy keys the guides name: those cartd honours and those it names
#: in a warning with a hint (`cartd.serving`).
CHERRYPY_KEYS = set(HONOURED) | set(HINTS)
#: Names of other programs' settings the guide mentions.
FOREIGN = {"PROMETHEUS_MULTIPROC_DIR"}
SECTIONS = {key.section for key in KEYS}

_FENCED = re.compile(r"```[^\n]*\n(.*?)```", re.DOTALL)
_INLINE = re.compile(r"`([^`\n]+)`")
_COMMAND = re.compile(r"(?<![\w-])cartd((?:\s+--[\w-]+(?:\s+[\w]+)?)*)\s+([a-z]+)\b(.*)")
_LEGACY_ADMIN = re.compile(r"(?<![\w-])pacifica-cartd-cmd\s+([a-z]+)\b(.*)")
_LEGACY_SERVER = re.compile(r"(?<![\w-])pacifica-cartd(?![\w-])(.*)")


def _code(text: str) -> list[str]:
    """The lines of code in a Markdown text: fenced blocks and inline spans."""
    fenced = [line for block in _FENCED.findall(text) for line in block.splitlines()]
    prose = _FENCED.sub("", text)
    return fenced + _INLINE.findall(prose)


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if a.dest == "command")
    assert isinstance(action.choices, dict)
    return action.choices


def _invocations() -> list[tuple[str, list[str]]]:
    """(command, options after it) for every `cartd COMMAND ...` in the guide and Compose."""
    found = []
    for line in _code(GUIDE):
        if line.lstrip().startswith(("#", "Description=")):
            continue  # comments and descriptions speak of cartd, they do not run it
        for match in _COMMAND.finditer(line):
            options = re.findall(r"(?<!\S)(--?[\w-]+)", match.group(3))
            found.append((match.group(2), options))
        for match in _LEGACY_ADMIN.finditer(line):  # the admin commands under the old name
            options = re.findall(r"(?<!\S)(--?[\w-]+)", match.group(2))
            found.append((match.group(1), options))
    for argv in re.findall(r"command:\s*\[(.*?)\]", COMPOSE):
        words = [word.strip().strip('"') for word in argv.split(",")]
        if words[0] == "cartd":
            found.append((words[1], [word for word in words[2:] if word.startswith("-")]))
    return found


def test_the_guide_runs_the_commands_it_should() -> None:
    named = {command for command, _ in _invocations()}
    assert {"serve", "dbsync", "dbchk", "stuck", "fixit", "dump", "worker"} <= named


@pytest.mark.parametrize(("command", "options"), _invocations(), ids=lambda value: str(value)[:40])
def test_every_cartd_command_in_the_guide_exists_with_its_options(
    command: str, options: list[str]
) -> None:
    commands = _subcommands()
    if command in PENDING:
        return
    assert command in commands, f"`cartd {command}` in docs/ is not a cartd command"
    accepted = {flag for action in commands[command]._actions for flag in action.option_strings}
    for option in options:
        assert option in accepted, f"`cartd {command}` takes no {option}"


def test_the_original_server_command_in_the_guides_takes_its_options() -> None:
    accepted = {flag for action in build_legacy_parser()._actions for flag in action.option_strings}
    used = [
        re.findall(r"(?<!\S)(--?[\w-]+)", match.group(1))
        for line in _code(GUIDE)
        for match in _LEGACY_SERVER.finditer(line)
    ]
    assert used, "the guides never run pacifica-cartd"
    for options in used:
        assert set(options) <= accepted, f"pacifica-cartd takes no {set(options) - accepted}"


def test_the_migration_guide_keeps_its_dbsync_section_and_is_linked() -> None:
    assert "## The database and the volume: `dbsync`" in MIGRATING
    assert "(docs/migrating.md)" in README


def test_pending_commands_are_still_pending() -> None:
    for command, why in PENDING.items():
        assert command not in _subcommands(), (
            f"`cartd {command}` exists now ({why}): drop it from PENDING so the guide's"
            " use of it is checked"
        )


def test_every_setting_in_the_guide_is_one_cartd_reads() -> None:
    names = {key.name for key in KEYS} | CHERRYPY_KEYS
    envs = {name for key in KEYS for name in key.env_names}
    code = _code(GUIDE)
    dotted = {
        token
        for span in code
        for token in re.findall(r"\b([a-z]+\.[a-z_]+)\b(?!:)", span)  # not a module:attribute
        if token.split(".")[0] in SECTIONS
    }
    assert dotted, "the guide names no setting"
    assert dotted <= names, f"not settings of cartd: {sorted(dotted - names)}"
    upper = {token for span in code for token in re.findall(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b", span)}
    unknown = upper - envs - PROCESS_ENV - FOREIGN
    assert not unknown, f"environment variables cartd does not read: {sorted(unknown)}"


def test_the_process_environment_variables_are_read_by_cartd() -> None:
    source = "".join(
        path.read_text(encoding="utf-8") for path in (DOCS.parent / "cartd").rglob("*.py")
    )
    for name in PROCESS_ENV:
        assert f'"{name}"' in source, f"{name} is documented but cartd never reads it"


def test_the_compose_file_sets_only_settings_cartd_reads() -> None:
    block = COMPOSE.split("environment: &cartd-env", 1)[1].split("\nservices:", 1)[0]
    names = set(re.findall(r"^\s+([A-Z][A-Z0-9_]+):", block, re.MULTILINE))
    assert names, "the Compose file sets no cartd setting"
    assert names <= {key.env for key in KEYS}, sorted(names - {key.env for key in KEYS})
    assert "not run by the test suite" in COMPOSE


def test_the_readme_links_the_guide() -> None:
    assert "(docs/deployment.md)" in README
