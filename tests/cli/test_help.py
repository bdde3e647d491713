"""Every command's ``--help``, at every level: each option has help and shows in the usage.

The walk covers whatever commands exist, so a new option without help fails here.
"""

from __future__ import annotations

import argparse
import subprocess
from collections.abc import Iterator

import pytest

from streamer.cli import exits
from streamer.cli.main import main
from streamer.cli.parser import build_parser
from streamer.server.settings_table import default_db_path

from ..support.procs import STREAMER

Capsys = pytest.CaptureFixture[str]


def parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """``(("users", "create"), parser)`` for the top level and every (sub)command."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from parsers(sub, (*path, name))


ALL = list(parsers(build_parser()))
IDS = [" ".join(path) or "streamer" for path, _ in ALL]


def documented(action: argparse.Action) -> bool:
    return bool(action.help) and action.help != argparse.SUPPRESS


def test_the_walk_reaches_every_command() -> None:
    leaves = {" ".join(path) for path, _ in ALL}
    assert {"serve", "follow", "run", "gc", "backup"} <= leaves
    assert {"users create", "users list", "users deactivate"} <= leaves
    assert {"keys create", "keys list", "keys revoke"} <= leaves
    assert {"jobs list", "jobs show", "jobs cancel"} <= leaves


@pytest.mark.parametrize(("path", "parser"), ALL, ids=IDS)
def test_every_option_and_argument_has_help_and_shows_in_the_usage(
    path: tuple[str, ...], parser: argparse.ArgumentParser, capsys: Capsys
) -> None:
    assert main([*path, "--help"]) == 0
    shown = capsys.readouterr().out
    usage = parser.format_usage()
    for action in parser._actions:
        name = "/".join(action.option_strings) or action.dest
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._get_subactions():
                assert documented(choice), f"{IDS[ALL.index((path, parser))]} {choice.dest}"
                assert choice.dest in shown
            continue
        assert documented(action), f"{' '.join(path)}: {name} has no help"
        if action.option_strings:
            assert action.option_strings[0] in usage, f"{name} is missing from the usage line"
            assert action.option_strings[0] in shown
        else:
            assert str(action.metavar or action.dest) in usage
        if action.choices and not isinstance(action.choices, dict):
            assert "{" + ",".join(map(str, action.choices)) + "}" in shown, f"{name}: choices"
    if path:  # every command prints the one exit-status table
        assert "exit status (every command):" in shown and "usage error" in shown


def test_settings_flags_name_their_variable_and_default() -> None:
    """``--db`` says the same everywhere: its variable and the real default path."""
    seen = 0
    for _, parser in ALL:
        for action in parser._actions:
            if "--db" in action.option_strings:
                seen += 1
                assert action.help is not None
                assert "STREAMER_DB" in action.help and default_db_path() in action.help
            if "--url" in action.option_strings or "--api-key" in action.option_strings:
                assert action.help is not None and "STREAMER_" in action.help
    assert seen >= 8, "users, keys, gc and backup all open the database"


def test_top_level_help_lists_commands_one_line_each_with_examples(capsys: Capsys) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "``" not in out and "main(argv)" not in out, "no internal docstring"
    listing = out.split("commands:\n")[1].split("\n\n")[0].splitlines()
    names = [line.split()[0] for line in listing]
    assert names == ["serve", "follow", "run", "jobs", "users", "keys", "gc", "backup"]
    assert all(len(line.split()) > 2 for line in listing), "each with a one-line summary"
    assert "examples:" in out and "streamer follow JOB_ID --tail 20" in out
    assert exits.help_text() in out


def test_retry_for_documents_the_first_contact_budget(capsys: Capsys) -> None:
    assert main(["follow", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "until the server has answered once, at most 10 s" in out
    assert "the last N lines of the log" in out


def test_version_and_help_from_the_installed_command() -> None:
    version = subprocess.run([STREAMER, "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("streamer ")
    assert version.stdout.split()[1][0].isdigit(), version.stdout
    bare = subprocess.run([STREAMER], capture_output=True, text=True, timeout=60)
    assert bare.returncode == 2 and "COMMAND" in bare.stderr
