"""docs/cli.md documents every sub-command and option of the ``chunkreg`` parser, and no other.

When this fails after a command or option was added, changed or removed, regenerate the page's
reference section with ``python docs/gen_cli.py`` (from the repository root).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
from pathlib import Path

import pytest

from chunkreg.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "cli.md"
HINT = "docs/cli.md is out of date: run `python docs/gen_cli.py` from the repository root"


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("the chunkreg parser has no sub-commands")


def _flat(text: str) -> str:
    """Collapse runs of whitespace, so text wrapped by argparse compares with the original."""
    return " ".join(text.split())


def _section(name: str) -> str:
    """The page's generated section for ``chunkreg NAME`` (up to the next heading)."""
    text = PAGE.read_text()
    match = re.search(rf"^### `chunkreg {re.escape(name)}`\n(.*?)(?=^#|\Z)", text, re.S | re.M)
    assert match, f"no section '### `chunkreg {name}`' in docs/cli.md; {HINT}"
    return match.group(1)


SUBCOMMANDS = _subcommands()


def test_every_subcommand_has_a_section():
    assert SUBCOMMANDS, "no sub-commands registered"
    text = PAGE.read_text()
    for name in SUBCOMMANDS:
        assert f"### `chunkreg {name}`" in text, f"`chunkreg {name}` missing; {HINT}"
        assert f"usage: chunkreg {name}" in text, f"`chunkreg {name}` usage missing; {HINT}"


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_every_option_and_help_text_is_documented(name):
    section = _section(name)
    flat = _flat(section)
    parser = SUBCOMMANDS[name]
    assert _flat(parser.description or "") in flat, f"description of {name} changed; {HINT}"
    for action in parser._actions:
        for option in action.option_strings:
            assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", section), (
                f"option {option} of `chunkreg {name}` missing; {HINT}"
            )
        if not action.option_strings:  # a positional argument
            assert (action.metavar or action.dest) in section, f"{action.dest}: {HINT}"
        if action.help and action.help != argparse.SUPPRESS:
            expanded = parser._get_formatter()._expand_help(action)  # "%%" -> "%", %(default)s
            assert _flat(expanded) in flat, (
                f"help of {action.option_strings or action.dest} in `chunkreg {name}` "
                f"changed; {HINT}"
            )
        if action.choices and not isinstance(action, argparse._SubParsersAction):
            assert "{" + ",".join(map(str, action.choices)) + "}" in section, (
                f"choices of {action.option_strings} in `chunkreg {name}` changed; {HINT}"
            )


def test_page_mentions_no_unknown_options():
    """Every ``--option`` anywhere on the page exists in some sub-command (or the top level)."""
    known = {"--help", "--version"}
    for parser in SUBCOMMANDS.values():
        for action in parser._actions:
            known.update(action.option_strings)
    mentioned = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", PAGE.read_text()))
    unknown = sorted(mentioned - known)
    assert not unknown, f"docs/cli.md mentions options no command has: {unknown}"


def test_generated_section_is_current():
    """The page holds what the generator writes now (up to line wrapping, which differs
    between Python versions)."""
    spec = importlib.util.spec_from_file_location("gen_cli", ROOT / "docs" / "gen_cli.py")
    gen_cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_cli)
    text = PAGE.read_text()
    assert _flat(gen_cli.updated_page(text)) == _flat(text), HINT
