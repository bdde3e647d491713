"""The dashboard on the change feed and the multi-job stream, in real Chromium.

The pipeline view follows four jobs at once over one connection and its DOM holds
each log exactly; the job list and the job header update from the change feed with
no polling while it is connected, and show a badge while it is not.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip(
    "playwright.async_api", reason="Playwright for Python is not installed (pip install playwright)"
)

from playwright.async_api import Browser, Page, expect  # noqa: E402

from ..support.dashboard_support import append, chromium_path, signed_in_page  # noqa: E402
from ..support.live import LiveServer  # noqa: E402
from . import test_dashboard as shared  # noqa: E402

if chromium_path() is None:
    pytest.skip(
        "Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True
    )

pytestmark = pytest.mark.asyncio(loop_scope="module")
E = "\x1b["


# One Chromium and one event loop for the module, as in test_dashboard.
chromium, browser, live_server = shared.chromium, shared.browser, shared.live_server


class Requests(shared.Watch):
    """What a page requested, and its errors (none expected; a feed's reconnect while
    the server is away logs network errors, which are not)."""

    def _console(self, message: Any) -> None:
        text = message.text
        if (
            message.type == "error"
            and "ERR_CONNECTION_REFUSED" not in text
            and "network" not in text
        ):
            self.errors.append(text)


async def pane_rows(page: Page, job: str) -> list[str]:
    rows: list[str] = await page.evaluate(
        "(job) => [...document.querySelectorAll(`.pane[data-job='${job}'] .prow[data-index]`)]"
        ".map(r => r.querySelector('.txt').textContent)",
        job,
    )
    return rows


async def test_pipeline_follows_four_logs_exactly_over_one_connection(
    live_server: LiveServer, browser: Browser
) -> None:
    client = live_server.client()
    jobs = [await live_server.create_job(client, name=f"shard-{i}") for i in range(4)]
    expected: dict[str, list[str]] = {job: [] for job in jobs}
    for job in jobs[:2]:  # two already have a history when the page opens
        lines = [f"{job} early {n}" for n in range(30)]
        await append(client, job, *({"data": line + "\n"} for line in lines))
        expected[job] += lines
    page = await signed_in_page(browser, live_server.key, color_scheme="dark")
    requests = Requests(page)
    await page.goto(f"{live_server.url}/?pipeline={','.join(jobs)}")
    await expect(page.locator(".pane")).to_have_count(4)
    await expect(page.locator("#pipeline-state")).to_have_text("live")
    for n in range(25):  # interleaved, some coloured, some split across events
        for i, job in enumerate(jobs):
            if n % 5 == 4:
                await append(client, job, {"data": f"{job} "}, {"data": f"part {n}\n"})
                expected[job].append(f"{job} ")
                expected[job].append(f"part {n}")
            else:
                text = f"{E}3{i + 1}m{job} live {n}{E}0m" if i % 2 else f"{job} live {n}"
                await append(client, job, {"data": text + "\n"})
                expected[job].append(f"{job} live {n}")
    await append(client, jobs[0], {"type": "complete", "success": True})
    expected[jobs[0]].append("✔ Job succeeded")
    for job in jobs:
        last = page.locator(f".pane[data-job='{job}'] .prow[data-index]").last
        await expect(last.locator(".txt")).to_have_text(expected[job][-1])
        assert await pane_rows(page, job) == expected[job]
    coloured = page.locator(f".pane[data-job='{jobs[1]}'] .prow[data-index] .txt span.fg2")
    await expect(coloured.first).to_be_visible()
    assert requests.count("/api/v1/streams/events") == 1, "one connection for every pane"
    assert requests.count("/events/stream") == 0
    done = page.locator(f".pane[data-job='{jobs[0]}']")
    await expect(done.locator(".status")).to_have_text("completed")  # from the change feed
    await expect(done.locator(".pane-end")).to_have_text("— end of log —")
    await expect(page.locator(f".pane[data-job='{jobs[1]}'] .status")).to_have_text("running")
    # Resizable: the keyboard makes a pane wider.
    pane = page.locator(f".pane[data-job='{jobs[2]}']")
    before = (await pane.bounding_box() or {})["width"]
    await pane.locator(".plog").focus()
    await page.keyboard.press("Alt+ArrowRight")
    await page.keyboard.press("Alt+ArrowRight")
    after = (await pane.bounding_box() or {})["width"]
    assert after > before, (before, after)
    assert requests.errors == []
    assert not [u for u in requests.urls if live_server.key in u], "an API key reached a URL"


async def test_pipeline_resumes_each_log_exactly_after_a_restart(
    live_server: LiveServer, browser: Browser
) -> None:
    client = live_server.client()
    jobs = [await live_server.create_job(client, name=f"r{i}") for i in range(4)]
    page = await signed_in_page(browser, live_server.key)
    requests = Requests(page)
    await page.goto(f"{live_server.url}/?pipeline={','.join(jobs)}")
    await expect(page.locator("#pipeline-state")).to_have_text("live")
    for job in jobs:
        await append(client, job, *({"data": f"{job} before {n}\n"} for n in range(10)))
    await expect(page.locator(f".pane[data-job='{jobs[3]}'] .prow[data-index]")).to_have_count(10)
    await live_server.restart()
    client = live_server.client()
    for job in jobs:
        await append(client, job, *({"data": f"{job} after {n}\n"} for n in range(10)))
    for job in jobs:
        rows = page.locator(f".pane[data-job='{job}'] .prow[data-index]")
        await expect(rows).to_have_count(20)
        assert await pane_rows(page, job) == [
            *(f"{job} before {n}" for n in range(10)),
            *(f"{job} after {n}" for n in range(10)),
        ]
    assert requests.count("/api/v1/streams/events") >= 2  # it reconnected, once for all


async def test_list_and_header_follow_the_feed_without_polling_and_show_a_badge(
    live_server: LiveServer, browser: Browser
) -> None:
    client = live_server.client()
    job = await live_server.create_job(client, name="watched")
    page = await signed_in_page(browser, live_server.key)
    requests = Requests(page)
    await page.goto(f"{live_server.url}/")
    row = page.locator(f'#jobs-body tr[data-id="{job}"]')
    await expect(row.locator(".status")).to_have_text("queued")
    await page.wait_for_function("() => window.streamerFeed && streamerFeed.live")
    lists = requests.count("/api/v1/jobs?")
    await client.patch(f"/api/v1/jobs/{job}", json={"status": "running"})
    await expect(row.locator(".status")).to_have_text("running")
    await append(client, job, *({"data": f"{n}\n"} for n in range(7)))
    await expect(row.locator(".events")).to_have_text("7")
    assert requests.count("/api/v1/jobs?") == lists, "an update in place, not a re-read"
    await page.wait_for_timeout(3500)  # longer than the old poll period: nothing polled
    assert requests.count("/api/v1/jobs?") == lists
    badge = page.locator("#feed-state")
    await expect(badge).to_be_hidden()
    await live_server.stop()
    await expect(badge).to_be_visible()
    await live_server.start()
    await live_server.client().patch(f"/api/v1/jobs/{job}", json={"status": "failed"})
    await expect(badge).to_be_hidden()
    await expect(row.locator(".status")).to_have_text("failed")

    await page.goto(f"{live_server.url}/?job={job}")
    await expect(page.locator("#job-status")).to_have_text("failed")
    other = await live_server.create_job(live_server.client(), name="second")
    await page.goto(f"{live_server.url}/?job={other}")
    await page.wait_for_function("() => window.streamerFeed && streamerFeed.live")
    await expect(page.locator("#conn")).to_have_text("live")  # the log's own stream too
    gets = requests.count(f"/api/v1/jobs/{other}")
    await live_server.client().patch(f"/api/v1/jobs/{other}", json={"status": "running"})
    await expect(page.locator("#job-status")).to_have_text("running")
    await append(live_server.client(), other, *({"data": f"{n}\n"} for n in range(3)))
    await expect(page.locator("#job-meta")).to_contain_text("3 events")
    await page.wait_for_timeout(3500)
    assert requests.count(f"/api/v1/jobs/{other}") == gets, requests.urls[-20:]  # no job polls
    assert requests.errors == []
