"""Settings are declared once: the README table, `serve --help` and env vars agree."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from streamer.cli.main import build_parser
from streamer.server.settings import Settings, load_settings
from streamer.server.settings_table import (
    CLIENT_SETTINGS,
    SETTINGS,
    Setting,
    default_db_path,
)

from ..support import REPO

README = REPO / "README.md"


def readme_rows(marker: str = "settings-table") -> dict[str, tuple[str, str, str]]:
    text = README.read_text()
    table = text.split(f"<!-- {marker}")[1].split(f"<!-- /{marker} -->")[0]
    rows = {}
    for line in table.splitlines():
        if line.startswith("| `STREAMER_"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0].strip("`")] = (cells[1].strip("`"), cells[2].strip("`"), cells[3])
    return rows


def rows(table: tuple[Setting, ...]) -> dict[str, tuple[str, str, str]]:
    return {s.env: (s.flag or "", s.documented_default(), s.help) for s in table}


def test_readme_settings_tables_match_the_declared_settings() -> None:
    assert readme_rows() == rows(SETTINGS)
    assert readme_rows("client-settings-table") == rows(CLIENT_SETTINGS)


def test_every_streamer_variable_named_in_the_docs_exists() -> None:
    """README, docs/api.md and deploy/ name only variables that something reads."""
    known = {s.env for s in (*SETTINGS, *CLIENT_SETTINGS)}
    known |= {"STREAMER_JOB_ID", "STREAMER_TEST_PG", "STREAMER_SOAK_SECONDS"}  # run, tests
    files = [README, REPO / "docs" / "api.md", REPO / "Dockerfile", *(REPO / "deploy").iterdir()]
    for path in files:
        named = set(re.findall(r"STREAMER_[A-Z0-9_]*[A-Z0-9]", path.read_text()))
        assert named <= known, f"{path.name} names unknown variables: {named - known}"


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


@pytest.mark.parametrize(
    "setting", [s for s in SETTINGS if s.minimum is not None], ids=lambda s: s.name
)
def test_a_value_below_a_settings_minimum_is_refused(setting: Setting) -> None:
    """Every bounded knob refuses what would switch its bound off (a buffer of 0
    bytes, a negative rate), naming the variable; its minimum itself is accepted."""
    assert setting.minimum is not None
    below = setting.kind(setting.minimum - 1)
    with pytest.raises(SystemExit, match=f"{setting.env} must be at least"):
        load_settings({setting.env: str(below)})
    assert getattr(
        load_settings({setting.env: str(setting.kind(setting.minimum))}), setting.name
    ) == (setting.minimum)


def test_default_database_is_in_the_user_data_dir_not_the_cwd() -> None:
    path = Path(default_db_path())
    assert path.is_absolute() and path.parent != Path.cwd()
    assert Settings().db_url == default_db_path()
