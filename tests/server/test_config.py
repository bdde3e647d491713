"""Settings are declared once: the README table, `serve --help` and env vars agree."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from streamer.cli.main import build_parser
from streamer.server.settings import SETTINGS, Settings, default_db_path, load_settings

from ..support import REPO

README = REPO / "README.md"


def readme_rows() -> dict[str, tuple[str, str, str]]:
    text = README.read_text()
    table = text.split("<!-- settings-table")[1].split("<!-- /settings-table -->")[0]
    rows = {}
    for line in table.splitlines():
        if line.startswith("| `STREAMER_"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0].strip("`")] = (cells[1].strip("`"), cells[2].strip("`"), cells[3])
    return rows


def test_readme_settings_table_matches_the_declared_settings() -> None:
    expected = {s.env: (s.flag or "", s.documented_default(), s.help) for s in SETTINGS}
    assert readme_rows() == expected


def test_every_setting_is_a_settings_field_with_the_same_default() -> None:
    fields = {f.name: f.default for f in dataclasses.fields(Settings) if f.name != "extra"}
    assert fields == {s.name: s.default for s in SETTINGS}


def test_serve_help_lists_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    out = capsys.readouterr().out
    for setting in SETTINGS:
        assert setting.env in out
        if setting.flag:
            assert setting.flag in out


def test_environment_then_flags_override_defaults() -> None:
    env = {"STREAMER_PORT": "9001", "STREAMER_KEEPALIVE_SECONDS": "2.5", "STREAMER_DB": "/x.db"}
    settings = load_settings(env, port=9002)
    assert settings.port == 9002 and settings.keepalive_seconds == 2.5
    assert settings.db_url == "/x.db"


def test_bad_values_are_refused_with_the_variable_name() -> None:
    with pytest.raises(SystemExit, match="STREAMER_PORT"):
        load_settings({"STREAMER_PORT": "eighty"})
    with pytest.raises(SystemExit, match="STREAMER_SYNC"):
        load_settings({"STREAMER_SYNC": "sometimes"})


def test_default_database_is_in_the_user_data_dir_not_the_cwd() -> None:
    path = Path(default_db_path())
    assert path.is_absolute() and path.parent != Path.cwd()
    assert Settings().db_url == default_db_path()
