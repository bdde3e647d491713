"""The Durable Streams protocol's own conformance suite, against a real ``streamer
serve``, on SQLite and on PostgreSQL: 0 failed, and its summary line in the output.

The suite (``@durable-streams/server-conformance-tests``, with vitest) is pinned by
``package-lock.json`` and installed by ``npm ci`` (``scripts/test`` does it); without
it, or without Node, or without PostgreSQL for that case, the test skips with the
reason. The suite sends no credentials, so the server serves them as its first
user (``STREAMER_DS_ANONYMOUS_USER``), with a short long-poll timeout (its tests of
a long-poll that times out wait 5 s at most).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ..support import REPO
from ..support.postgres import pg_database
from ..support.procs import ServerProcess

SUITE = REPO / "node_modules" / "@durable-streams" / "server-conformance-tests"
VITEST = REPO / "node_modules" / ".bin" / "vitest"
CONFIG = Path(__file__).parent / "conformance" / "vitest.config.mjs"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
SUMMARY = re.compile(r"^\s*Tests\s+(.*)$", re.MULTILINE)
EXPECTED_AT_LEAST = 332  # the suite's tests without the opt-in subscription ones (0.3.6)


@contextlib.asynccontextmanager
async def database(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    if backend == "sqlite":
        yield ""
        return
    async with pg_database() as (url, _):
        yield url


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_the_protocols_conformance_suite_passes(
    backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if shutil.which("node") is None:
        pytest.skip("no node: the conformance suite runs on Node")
    if not (SUITE / "dist" / "test-runner.js").exists() or not VITEST.exists():
        pytest.skip("the conformance suite is not installed: npm ci (from package-lock.json)")
    async with database(backend, tmp_path) as url:
        server = ServerProcess(
            tmp_path / "conformance.db",
            db_url=url,
            env={
                "STREAMER_DS_ANONYMOUS_USER": "admin@localhost",  # the first start's user
                "STREAMER_DS_LONG_POLL_SECONDS": "1",
            },
        )
        server.start()
        try:
            proc = await asyncio.create_subprocess_exec(
                str(VITEST),
                "run",
                "--config",
                str(CONFIG),
                cwd=REPO,
                env={**os.environ, "CONFORMANCE_TEST_URL": server.url, "FORCE_COLOR": "0"},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await asyncio.wait_for(proc.communicate(), 300)
        finally:
            server.terminate()
    text = ANSI.sub("", out.decode(errors="replace"))
    found = SUMMARY.findall(text)
    assert found, text[-4000:]
    summary = found[-1].strip()
    with capsys.disabled():
        print(f"\nDurable Streams conformance ({backend}): {summary}")
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped)", summary)}
    assert counts.get("failed", 0) == 0 and proc.returncode == 0, text[-8000:]
    assert counts.get("passed", 0) >= EXPECTED_AT_LEAST, summary
