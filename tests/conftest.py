"""Fixtures: a real server on a free loopback port (``support/live.py``), real SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from streamer.server.settings import Settings

from .support.live import LiveServer, serving

pytest_plugins: list[str] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run soak and long crash loops")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(db=str(tmp_path / "streamer.db"), keepalive_seconds=15.0)


@pytest.fixture
async def live_server(settings: Settings) -> AsyncIterator[LiveServer]:
    async with serving(settings) as server:
        yield server
