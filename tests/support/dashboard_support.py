"""Helpers for the dashboard's browser tests, screenshots and benchmark.

Real headless Chromium (Debian's ``chromium``) driven by Playwright, against a real
server. ``LiveServer.restart()`` keeps its port: the page's origin holds its session
(the key is in ``sessionStorage``) and its stream URLs, so a restart that moved to
another port would be a different site to the browser, not a restart.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator
from typing import Any

import httpx

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
KEY_STORAGE = "streamer.apiKey"


def chromium_path() -> str | None:
    """Debian's chromium; never a browser downloaded by ``playwright install``."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextlib.asynccontextmanager
async def launch() -> AsyncIterator[Any]:
    """A headless Chromium browser (Playwright ``Browser``)."""
    from playwright.async_api import async_playwright

    executable = chromium_path()
    assert executable is not None
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def signed_in_page(browser: Any, key: str, **context_args: Any) -> Any:
    """A page whose tab already holds ``key`` in sessionStorage, as after signing in."""
    context = await browser.new_context(**context_args)
    await context.add_init_script(
        f"sessionStorage.setItem({KEY_STORAGE!r}, {key!r});",
    )
    return await context.new_page()


async def append(client: httpx.AsyncClient, job: str, *events: dict[str, Any]) -> int:
    """Append events as one batch; the index of the last one."""
    r = await client.post(f"/api/v1/jobs/{job}/events", json={"events": list(events)})
    assert r.status_code == 201, r.text
    last: int = r.json()["last_index"]
    return last


async def append_lines(client: httpx.AsyncClient, job: str, lines: list[str]) -> int:
    """Append ``lines`` (one event each), in batches the server accepts."""
    last = -1
    for start in range(0, len(lines), 5000):
        batch = [{"data": line + "\n"} for line in lines[start : start + 5000]]
        last = await append(client, job, *batch)
    return last


async def server_events(client: httpx.AsyncClient, job: str) -> list[dict[str, Any]]:
    """Every stored event of a job, by pages."""
    out: list[dict[str, Any]] = []
    while True:
        r = await client.get(f"/api/v1/jobs/{job}/events", params={"from_index": len(out)})
        assert r.status_code == 200, r.text
        page = r.json()
        out.extend(page["events"])
        if page["complete"] or not page["events"]:
            return out
