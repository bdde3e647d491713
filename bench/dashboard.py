"""Dashboard benchmark: a 1,000,000-line job in real headless Chromium.

    .venv/bin/python -m bench.dashboard [--lines N] [--live N]

Starts a real server on a temporary database, appends the job, opens it in the
dashboard and measures: time to the first rows on screen, frame times while
scrolling up through the log and while following live appends, the time to show
rows after jumps to random places, and the JS heap (after a forced GC) at each
stage. It also checks what it measures: the page's model count, and that the rows
on screen hold exactly the expected text for their indexes. One JSON line goes to
bench/results/dashboard.jsonl.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from streamer.core import keys
from streamer.server.run import build_server
from streamer.server.settings import Settings

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "dashboard.jsonl"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def line(i: int) -> str:
    """Line i of the synthetic build log: coloured, of varying length."""
    if i % 50 == 0:
        return f"\x1b[1;36m==> step {i // 50}\x1b[0m"
    if i % 7 == 0:
        return f"{i:07d} \x1b[33mwarning\x1b[0m deprecated call in module_{i % 97}"
    return f"{i:07d} \x1b[32mok\x1b[0m compiling module_{i % 997}.py " + "." * (i % 40)


def shown(i: int) -> str:
    return ANSI.sub("", line(i))


def stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered), 2),
        "p95": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 2),
        "max": round(ordered[-1], 2),
        "over_50ms": sum(v > 50 for v in ordered),
        "frames": len(ordered),
    }


def git_rev() -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=BENCH, capture_output=True, text=True
    )
    return out.stdout.strip() or "unknown"


async def append_all(client: httpx.AsyncClient, job: str, start: int, stop: int) -> None:
    for first in range(start, stop, 5000):
        events = [{"data": line(i) + "\n"} for i in range(first, min(stop, first + 5000))]
        r = await client.post(f"/api/v1/jobs/{job}/events", json={"events": events})
        r.raise_for_status()
        assert r.json()["first_index"] == first, r.text


# In-page measurements. Functions, not strings: the page's CSP forbids eval.
SCROLL_FRAMES = """async ([frames, step]) => {
    const el = document.getElementById("log");
    const times = [];
    let last = performance.now();
    for (let k = 0; k < frames; k++) {
        await new Promise((resolve) => requestAnimationFrame(resolve));
        const now = performance.now();
        times.push(now - last);
        last = now;
        el.scrollTop -= step;
    }
    return times;
}"""

FRAME_WATCH = """() => {
    window.benchFrames = [];
    let last = performance.now();
    const tick = (now) => {
        window.benchFrames.push(now - last);
        last = now;
        if (!window.benchStop) requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
}"""

ROWS_READY = """() => window.streamerView?.firstPaint !== undefined
    && document.querySelectorAll(".row").length > 5
    && !document.querySelector(".row.missing")"""


async def heap(cdp: Any) -> int:
    await cdp.send("HeapProfiler.collectGarbage")
    metrics = await cdp.send("Performance.getMetrics")
    return int(next(m["value"] for m in metrics["metrics"] if m["name"] == "JSHeapUsedSize"))


async def check_rows(page: Any) -> int:
    rows = await page.evaluate("() => streamerView.visibleRows()")
    for index, text in rows:
        assert text == shown(index), (index, text, shown(index))
    return len(rows)


async def run(lines: int, live: int) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    with tempfile.TemporaryDirectory() as tmp:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        settings = Settings(db=f"{tmp}/bench.db", port=port)
        server = build_server(settings, log_level="warning")
        task = asyncio.create_task(server.serve(sockets=[sock]))
        # The servers offer only this flag; the lifespan (opening SQLite) takes milliseconds.
        while not server.started:  # noqa: ASYNC110
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        url = f"http://127.0.0.1:{port}"
        try:
            _, key = await keys.create_user_with_key(
                server.app.state.resources.storage.identity, "bench", "bench@example.com"
            )
            headers = {"Authorization": f"Bearer {key}"}
            async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as client:
                job = (await client.post("/api/v1/jobs", json={"name": "1M lines"})).json()["id"]
                await client.patch(f"/api/v1/jobs/{job}", json={"status": "running"})
                t0 = time.perf_counter()
                await append_all(client, job, 0, lines)
                ingest_s = time.perf_counter() - t0
                print(f"appended {lines} lines in {ingest_s:.1f}s", file=sys.stderr)
                async with async_playwright() as pw:
                    chromium = shutil.which("chromium") or "/usr/bin/chromium"
                    browser = await pw.chromium.launch(executable_path=chromium, args=ARGS)
                    try:
                        return {
                            "lines": lines,
                            "ingest_s": round(ingest_s, 1),
                            **await measure(browser, url, key, job, client, lines, live),
                        }
                    finally:
                        await browser.close()
        finally:
            server.should_exit = True
            await task


async def measure(
    browser: Any, url: str, key: str, job: str, client: httpx.AsyncClient, lines: int, live: int
) -> dict[str, Any]:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    await context.add_init_script(f"sessionStorage.setItem('streamer.apiKey', {key!r});")
    page = await context.new_page()
    cdp = await context.new_cdp_session(page)
    await cdp.send("Performance.enable")
    out: dict[str, Any] = {}

    t0 = time.perf_counter()
    await page.goto(f"{url}/?job={job}")
    await page.wait_for_function(ROWS_READY, timeout=60_000)
    out["open_wall_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    out["first_rows_ms"] = round(await page.evaluate("() => streamerView.firstPaint"), 1)
    out["first_contentful_paint_ms"] = await page.evaluate(
        "() => performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? null"
    )
    assert await page.evaluate("() => streamerLog.count") == lines
    out["chunks_at_open"] = await page.evaluate("() => [...streamerLog.chunks.keys()]")
    await check_rows(page)
    out["heap_open_mb"] = round(await heap(cdp) / 2**20, 1)

    # Scroll up through 6,000 rows (120 px a frame, like a fling), loading as it goes.
    times = await page.evaluate(SCROLL_FRAMES, [1000, 120])
    out["scroll_frame_ms"] = stats(times[1:])
    await page.wait_for_function(ROWS_READY, timeout=30_000)
    await check_rows(page)

    # Jumps anywhere, as a scrollbar drag would: time until the rows there are shown.
    rng = random.Random(7)
    jumps = []
    for _ in range(20):
        target = rng.randrange(lines)
        t = time.perf_counter()
        await page.evaluate(f"() => streamerView.reveal({target})")
        await page.wait_for_function(ROWS_READY, timeout=30_000)
        jumps.append((time.perf_counter() - t) * 1000)
        await check_rows(page)
    out["jump_to_rows_ms"] = stats(jumps)
    del out["jump_to_rows_ms"]["over_50ms"]
    out["chunks_held"] = await page.evaluate("() => streamerLog.chunks.size")
    out["dom_rows"] = await page.evaluate("() => document.querySelectorAll('.row').length")
    out["heap_after_jumps_mb"] = round(await heap(cdp) / 2**20, 1)

    # Search the whole log on the server: the count (and the first match shown), then
    # every match's position for next/previous, with memory bounded.
    expected = sum(1 for i in range(lines) if i % 7 == 0 and i % 50 != 0)
    t = time.perf_counter()
    await page.fill("#search-q", "warning")
    await page.wait_for_function(
        "() => streamerSearch.query === 'warning' && document.querySelector('mark.current')",
        timeout=300_000,
    )
    out["search_first_match_s"] = round(time.perf_counter() - t, 2)
    await page.wait_for_function(
        "() => streamerSearch.query === 'warning' && streamerSearch.counted", timeout=300_000
    )
    out["search_count_s"] = round(time.perf_counter() - t, 2)
    await page.wait_for_function(
        "() => streamerSearch.query === 'warning' && streamerSearch.done", timeout=300_000
    )
    out["search_s"] = round(time.perf_counter() - t, 2)
    out["search_matches"] = await page.evaluate("() => streamerSearch.count")
    assert out["search_matches"] == expected, (out["search_matches"], expected)
    out["chunks_held_after_search"] = await page.evaluate("() => streamerLog.chunks.size")
    out["heap_after_search_mb"] = round(await heap(cdp) / 2**20, 1)
    await page.fill("#search-q", "")

    # Follow live: append `live` more lines in batches while the page sticks to the end.
    await page.evaluate("() => streamerView.follow()")
    await page.evaluate(FRAME_WATCH)
    t = time.perf_counter()
    for first in range(lines, lines + live, 500):
        await append_all(client, job, first, min(lines + live, first + 500))
    appended = time.perf_counter()
    await page.wait_for_function(f"() => streamerLog.count === {lines + live}", timeout=60_000)
    out["live_lines"] = live
    out["live_append_s"] = round(appended - t, 2)
    out["live_lag_ms"] = round((time.perf_counter() - appended) * 1000, 1)
    frames = await page.evaluate("() => { window.benchStop = true; return window.benchFrames; }")
    out["live_frame_ms"] = stats(frames[1:])
    await page.wait_for_function(ROWS_READY)
    rows = await page.evaluate("() => streamerView.visibleRows()")
    assert rows[-1][0] == lines + live - 1, rows[-1]
    await check_rows(page)
    tail = await page.evaluate(
        f"() => streamerLog.snapshot().filter(e => e.index >= {lines}).map(e => e.data)"
    )
    assert tail == [line(i) + "\n" for i in range(lines, lines + live)], "live events differ"
    out["heap_after_live_mb"] = round(await heap(cdp) / 2**20, 1)
    await context.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--live", type=int, default=20_000)
    args = parser.parse_args(argv)
    numbers = asyncio.run(run(args.lines, args.live))
    record = {
        "scenario": "dashboard",
        "rev": git_rev(),
        "ts": datetime.now(UTC).isoformat(timespec="seconds"),
        "loadavg": round(os.getloadavg()[0], 2),  # other work on the machine skews frames
        **numbers,
    }
    line_out = json.dumps(record, separators=(",", ":"))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as out:
        out.write(line_out + "\n")
    print(line_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
