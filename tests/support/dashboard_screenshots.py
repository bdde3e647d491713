"""Screenshots of the dashboard for the README: ``python -m tests.support.dashboard_screenshots``.

Starts a real server on a temporary database, fills it with a few jobs, a GitHub
Actions style build log (``::group::`` sections, one failing) and a 1,000,000-line
log, and saves to docs/screenshots/: the job list and the folded CI log (light and
dark), a search of the 1M-line log, and the phone layout.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import tempfile
from typing import Any

from streamer.core.models import NewEvent
from streamer.server.settings import Settings

from . import REPO
from .dashboard_support import append, chromium_path, launch, signed_in_page
from .live import LiveServer

OUT = REPO / "docs" / "screenshots"
E = "\x1b["


def build_log() -> list[dict[str, Any]]:
    """A CI-like log: steps, colours of every kind, a progress bar, a warning."""
    ev: list[dict[str, Any]] = [{"type": "step", "data": "Set up job"}]
    ev += [
        {"data": f"{E}1mCurrent runner version:{E}0m '2.321.0'\n"},
        {"data": f"Operating System: {E}36mDebian GNU/Linux 12 (bookworm){E}0m\n"},
        {"data": f"Runner image: {E}38;5;141mstreamer/ci:2026.11{E}0m\n"},
        {"type": "step", "data": "Install dependencies"},
        {"data": f"{E}2m$ pip install -e '.[dev]'{E}0m\n"},
        {"data": "Downloading wheels  10%\rDownloading wheels  55%\rDownloading wheels 100%\n"},
        {"data": f"Collecting starlette>=0.40 {E}2m(from streamer==0.1.0){E}0m\n"},
        {"data": f"Collecting uvicorn[standard]>=0.30 {E}2m(from streamer==0.1.0){E}0m\n"},
        {"data": f"{E}33mWARNING: pip is configured with locations that require TLS{E}0m\n"},
        {"data": f"Successfully installed {E}1;32m27 packages{E}0m in 4.2s\n"},
        {"type": "step", "data": "Run tests"},
        {"data": f"{E}1m============ test session starts ============{E}0m\n"},
        {"data": "platform linux -- Python 3.11.2, pytest-8.3.3\n"},
        {"data": "collected 212 items\n"},
        {"data": f"tests/test_api.py {E}32m........................{E}0m{E}32m  [ 11%]{E}0m\n"},
        {"data": f"tests/test_follow.py {E}32m..............{E}0m{E}32m        [ 18%]{E}0m\n"},
        {"data": f"tests/test_sse.py {E}32m.......{E}31mF{E}32m.........    [ 26%]{E}m\n"},
        {"data": f"tests/test_ws.py {E}32m...................{E}0m{E}33ms{E}32m  [ 35%]{E}0m\n"},
        {"data": f"{E}31m{E}1m___________ test_resume_after_restart ___________{E}0m\n"},
        {"data": f"{E}31mE   AssertionError: expected index 41, got 43{E}0m\n"},
        {"data": f"{E}4mtests/test_sse.py{E}24m:88: {E}3mAssertionError{E}23m\n"},
    ]
    gradient = "".join(
        f"{E}48;2;{int(40 + 200 * k / 47)};{int(90 + 100 * k / 47)};{int(230 - 180 * k / 47)}m "
        for k in range(48)
    )
    ev.append({"data": f"24-bit: {gradient}{E}0m\n"})
    ev.append({"data": "256:    " + "".join(f"{E}48;5;{c}m " for c in range(16, 64)) + f"{E}0m\n"})
    ev.append({"data": f"{E}7m inverse {E}27m {E}9mstrike{E}29m {E}95mbright magenta{E}0m\n"})
    return ev


def actions_log() -> list[list[dict[str, Any]]]:
    """A GitHub Actions job as its runner prints it: one group per step, in batches
    (one per step) so each step has its own duration."""
    g = "::group::"
    steps: list[list[str]] = [
        [f"{g}Set up job", "Current runner version: '2.321.0'", "Operating System",
         "  Ubuntu 24.04.1 LTS", "Runner Image", "  Image: ubuntu-24.04", "::endgroup::"],
        [f"{g}Run actions/checkout@v4", "Syncing repository: acme/streamer",
         f"{E}36m[command]{E}0m/usr/bin/git init /home/runner/work/streamer",
         "Determining the checkout info", f"{E}36m[command]{E}0m/usr/bin/git checkout --force "
         "refs/remotes/pull/214/merge", "::endgroup::"],
        [f"{g}Run actions/setup-python@v5", "Installed versions",
         "  Successfully set up CPython (3.12.7)", "::endgroup::"],
        [f"{g}Run pip install -e '.[dev]'", "Collecting starlette>=0.40",
         "Collecting uvicorn[standard]>=0.52.1", f"Successfully installed {E}1;32m27 packages{E}0m",
         "::endgroup::"],
        [f"{g}Run pytest -q", f"{E}1m============ test session starts ============{E}0m",
         "collected 212 items", f"tests/test_api.py {E}32m........................{E}0m  [ 11%]",
         f"tests/test_sse.py {E}32m.......{E}31mF{E}32m.........{E}0m    [ 26%]",
         f"{E}31m{E}1m___________ test_resume_after_restart ___________{E}0m",
         f"{E}31mE   AssertionError: expected index 41, got 43{E}0m",
         f"{E}4mtests/test_sse.py{E}24m:88: AssertionError",
         f"{E}31m=========== 1 failed, 211 passed in 41.37s ==========={E}0m",
         "##[error]Process completed with exit code 1.", "::endgroup::"],
    ]  # fmt: skip
    return [[{"data": line + "\n"} for line in step] for step in steps]


async def main() -> int:
    if chromium_path() is None:
        print("chromium is not installed (apt-get install chromium)", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        server = LiveServer(Settings(db=f"{tmp}/streamer.db"))
        await server.start()
        try:
            server.key = await server.new_user("owner")
            await shoot(server)
        finally:
            for client in server.clients:
                await client.aclose()
            await server.stop()
    return 0


async def shoot(server: LiveServer) -> None:
    client = server.client()
    for name, status, lines in [
        ("deploy production", "completed", 40),
        ("nightly integration", "failed", 120),
        ("docs preview", "cancelled", 3),
        ("lint", "completed", 12),
        ("release v0.1.0", "running", 7),
    ]:
        job = await server.create_job(name=name)
        await append(client, job, *[{"data": f"line {i}\n"} for i in range(lines)])
        if status != "queued":
            await client.patch(f"/api/v1/jobs/{job}", json={"status": "running"})
        if status in ("completed", "failed"):
            await append(client, job, {"type": "complete", "success": status == "completed"})
        elif status == "cancelled":
            await client.patch(f"/api/v1/jobs/{job}", json={"status": "cancelled"})
    await server.create_job(name="queued: benchmark")
    build = await server.create_job(name="ci / test (3.12)")
    await client.patch(f"/api/v1/jobs/{build}", json={"status": "running"})
    # Steps in separate appends, a moment apart, so their durations are not all 0ms.
    for pace, step in zip((1.1, 2.2, 0.7, 1.6, 2.4), actions_log(), strict=True):
        await append(client, build, *step[:-1])
        await asyncio.sleep(pace)  # a demo's pacing, not a wait for anything
        await append(client, build, step[-1])  # ::endgroup:: ends the step's time
    await append(client, build, {"type": "complete", "success": False})
    colours = await server.create_job(name="colours")
    events = build_log()
    starts = [i for i, e in enumerate(events) if e.get("type") == "step"] + [len(events)]
    for a, b in itertools.pairwise(starts):
        await append(client, colours, *events[a:b])
    big = await million_lines(server)

    async with launch() as browser:
        for scheme in ("light", "dark"):
            page = await signed_in_page(
                browser, server.key, color_scheme=scheme, viewport={"width": 1100, "height": 720}
            )
            await page.goto(server.url + "/")
            await page.wait_for_selector("#jobs-body tr:nth-child(7)")
            await page.screenshot(path=str(OUT / f"jobs-{scheme}.png"))
            await page.goto(f"{server.url}/?job={build}")
            await page.wait_for_function("() => window.streamerStream?.state === 'done'")
            await page.locator(".row.head").first.wait_for()
            await page.screenshot(path=str(OUT / f"log-{scheme}.png"))
            await page.context.close()
        page = await signed_in_page(
            browser, server.key, color_scheme="dark", viewport={"width": 1100, "height": 720}
        )
        await page.goto(f"{server.url}/?job={big}")
        await page.locator(".row").first.wait_for()
        await page.fill("#search-q", "warning")
        await page.wait_for_function("() => streamerSearch.total > 0")
        await page.locator("#search-next").click()
        await page.locator("#search-next").click()
        await page.wait_for_function("() => document.querySelector('mark.current')")
        await page.screenshot(path=str(OUT / "search-1m.png"))
        await page.context.close()
        phone = {"width": 390, "height": 780}
        page = await signed_in_page(browser, server.key, color_scheme="light", viewport=phone)
        await page.goto(server.url + "/")
        await page.wait_for_selector("#jobs-body tr:nth-child(7)")
        await page.screenshot(path=str(OUT / "phone-jobs.png"))
        await page.goto(f"{server.url}/?job={build}")
        await page.locator(".row.head").first.wait_for()
        await page.screenshot(path=str(OUT / "phone-log.png"))
        await page.context.close()


async def million_lines(server: LiveServer) -> str:
    """A finished 1,000,000-line job (the dashboard benchmark's log), stored directly."""
    from bench.dashboard import line

    storage = server.resources.storage
    owner = (await storage.identity.list_users())[0]
    job = await storage.jobs.create_job(owner.id, "1M lines", {})
    for first in range(0, 1_000_000, 10_000):
        batch = [NewEvent("log", line(i) + "\n", None) for i in range(first, first + 10_000)]
        await storage.jobs.append(owner.id, job.id, batch)
    await storage.jobs.append(owner.id, job.id, [NewEvent("complete", None, True)])
    return job.id


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
