"""The dashboard as a CI log viewer, in real Chromium against a real server: sections
that fold (mouse and keyboard) with their durations in view, line numbers of the raw
download, server search, view options remembered, cancel, raw view, the tab's status,
an outage said plainly, accessibility (axe-core), the phone layout and the theme."""

from __future__ import annotations

import re
from typing import Any

import pytest

pytest.importorskip("playwright.async_api", reason="Playwright for Python is not installed")

from playwright.async_api import Browser, Page, expect  # noqa: E402

from tests.support import REPO  # noqa: E402

from ..support.dashboard_support import append, append_lines, chromium_path, signed_in_page  # noqa: E402
from ..support.live import LiveServer  # noqa: E402
from . import test_dashboard as shared  # noqa: E402

if chromium_path() is None:
    pytest.skip("Debian's chromium is not installed", allow_module_level=True)

pytestmark = pytest.mark.asyncio(loop_scope="module")
# One Chromium and one event loop for the module, as in test_dashboard.
chromium, browser, live_server = shared.chromium, shared.browser, shared.live_server
Watch, open_job = shared.Watch, shared.open_job

E = "\x1b["
AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"
WIDE = "w" * 5000
CI = [
    {"data": "::group::Set up job\n"},
    {"data": "Runner version 2.321.0\n"},
    {"data": "::endgroup::\n"},
    {"data": f"{E}0Ksection_start:1700000000:tests[collapsed=true]\r{E}0KRun tests\n"},
    {"data": "::group::unit\n"},
    {"data": "test_a PASSED\ntest_b PASSED\n"},  # one event, two lines
    {"data": "::endgroup::\n"},
    {"data": f"{WIDE}\n"},  # makes the log far wider than the box
    {"data": f"{E}0Ksection_end:1700000009:tests\r{E}0K\n"},
    {"data": "+++ Deploy\n"},  # Buildkite's expanded group
    {"data": "pushed\n"},
]


async def live_job(
    browser: Browser, server: LiveServer, name: str, lines: list[str]
) -> tuple[Any, str, Page, Any]:
    """A running job holding ``lines``, open in a page that follows it live."""
    client = server.client()
    job = await server.create_job(name=name)
    await client.patch(f"/api/v1/jobs/{job}", json={"status": "running"})
    await append_lines(client, job, lines)
    page, watch = await open_job(browser, server, job)
    await expect(page.locator("#conn")).to_have_text("live")
    return client, job, page, watch


async def rows(page: Page) -> list[tuple[int | None, str]]:
    """(line number, text) of every row in the DOM, in order."""
    found: list[list[Any]] = await page.evaluate(
        """() => [...document.querySelectorAll('.log-rows .row')].map(r => [
            r.dataset.line ? Number(r.dataset.line) : null, r.querySelector('.txt').textContent])"""
    )
    return [(line, text) for line, text in found]


async def test_a_ci_log_folds_by_mouse_and_keyboard_with_durations_in_view(
    live_server: LiveServer, browser: Browser
) -> None:
    client = live_server.client()
    job = await live_server.create_job(name="ci")
    await client.patch(f"/api/v1/jobs/{job}", json={"status": "running"})
    await append(client, job, *CI)
    page, watch = await open_job(browser, live_server, job)
    heads = page.locator(".row.head")
    await expect(heads).to_have_count(3)  # folded "Run tests" hides "unit"
    assert await rows(page) == [
        (1, "▸ Set up job"),
        (4, "▸ Run tests"),
        (11, "▾ Deploy"),
        (12, "pushed"),
    ]
    # The durations sit on their header rows, inside the visible box, despite the width.
    box = await page.locator("#log").bounding_box()
    assert box is not None
    for i in range(3):
        dur = await heads.nth(i).locator(".dur").bounding_box()
        assert dur is not None and dur["x"] + dur["width"] <= box["x"] + box["width"] + 1
        assert box["x"] < dur["x"]
    assert (await heads.nth(2).locator(".dur").text_content() or "").endswith("…")  # running

    await heads.nth(1).locator(".fold").click()  # open "Run tests" by mouse
    await expect(page.locator(".row.head")).to_have_count(4)
    shown = await rows(page)
    assert (5, "▸ unit") in shown and (9, WIDE) in shown
    assert not [t for _, t in shown if "endgroup" in t or "section_end" in t]  # markers hidden
    unit = page.locator(".fold", has_text="unit")
    await unit.focus()
    await page.keyboard.press("Enter")  # open by keyboard
    await expect(page.locator(".row", has_text="test_b PASSED")).to_have_count(1)
    shown = await rows(page)
    assert (6, "test_a PASSED") in shown and (7, "test_b PASSED") in shown  # one event, two lines
    await page.locator(".fold", has_text="unit").focus()
    await page.keyboard.press("ArrowLeft")  # fold again
    await expect(page.locator(".row", has_text="test_b PASSED")).to_have_count(0)
    depth = await page.locator(".fold", has_text="unit").evaluate(
        "b => getComputedStyle(b.closest('.row')).getPropertyValue('--depth')"
    )
    assert depth.strip() == "1"

    # Every numbered row shows its line of the raw download (escapes aside).
    raw = (await client.get(f"/api/v1/jobs/{job}/log")).text.split("\n")
    for line, text in await rows(page):
        if line is not None and not text.startswith(("▸", "▾")):
            assert re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", raw[line - 1]) == text

    # The section list jumps to a header; a new group appears live in it.
    listed = page.locator("#section-list .jump-to")
    await expect(listed).to_have_count(4)
    await append(client, job, {"type": "step", "data": "Package\n"}, {"data": "built\n"})
    await expect(listed).to_have_count(5)
    await expect(page.locator(".row.head", has_text="Package")).to_have_count(1)
    await listed.nth(0).click()
    await expect(page.locator(".row.head", has_text="Set up job")).to_be_visible()
    watch.check(live_server.key)


async def test_a_failed_job_opens_the_sections_that_hold_the_failure(
    live_server: LiveServer, browser: Browser
) -> None:
    client = live_server.client()
    job = await live_server.create_job(name="failing")
    groups = []
    for name, body in [
        ("lint", "all good"),
        ("build", f"{E}31merror{E}0m: cannot link"),
        ("docs", "ok"),
    ]:
        groups += [
            {"data": f"::group::{name}\n"},
            {"data": f"{body}\n"},
            {"data": "::endgroup::\n"},
        ]
    await append(client, job, *groups, {"type": "complete", "success": False})
    page, watch = await open_job(browser, live_server, job)
    build = page.locator(".row.head", has_text="build")
    await expect(build.locator(".fold")).to_have_attribute("aria-expanded", "true")
    await expect(page.locator(".row", has_text="cannot link")).to_have_count(1)
    for name in ("lint", "docs"):
        fold = page.locator(".row.head", has_text=name).locator(".fold")
        await expect(fold).to_have_attribute("aria-expanded", "false")
    await expect(page.locator("#section-list .failing")).to_have_text(re.compile("build"))
    watch.check(live_server.key)


async def test_permalinks_name_raw_lines_even_inside_multi_line_events_and_folds(
    live_server: LiveServer, browser: Browser
) -> None:
    client = live_server.client()
    job = await live_server.create_job(name="permalinks")
    lines = [f"line {n}" for n in range(1, 3001)]
    events = ["\n".join(lines[k : k + 3]) + "\n" for k in range(0, 3000, 3)]  # 3 lines each
    events[400] = "::group::hidden\n" + events[400]
    await append(client, job, *[{"data": d} for d in events[:500]])
    await append(client, job, *[{"data": d} for d in events[500:]], {"data": "::endgroup::\n"})
    page, watch = await open_job(browser, live_server, job, "#L1205-L1206")
    # event 400 starts with the group's header (line 1201); its lines 1202-1204 follow
    row = page.locator('.row[data-line="1205"]')
    await expect(row.locator(".txt")).to_have_text("line 1204")
    await expect(row).to_have_class(re.compile(r"\bsel\b"))
    await expect(page.locator('.row[data-line="1206"]')).to_have_class(re.compile(r"\bsel\b"))
    assert await page.evaluate("() => streamerView.visible(401, 1205)")
    await page.goto(f"{live_server.url}/?job={job}#L9")
    await expect(page.locator('.row[data-line="9"] .txt')).to_have_text("line 9")
    watch.check(live_server.key)


async def test_timestamps_and_wrap_are_toggled_and_remembered(
    live_server: LiveServer, browser: Browser
) -> None:
    client = live_server.client()
    job = await live_server.create_job(name="options")
    await append(client, job, {"data": "short\n"}, {"data": "x" * 3000 + "\n"})
    page, watch = await open_job(browser, live_server, job)
    await expect(page.locator(".row")).to_have_count(2)
    time = page.locator("#opt-time")
    await time.click()
    stamp = page.locator(".row").first.locator(".ts")
    await expect(stamp).to_have_text(re.compile(r"^\d\d:\d\d:\d\d\.\d{3}$"))
    await time.click()
    await expect(stamp).to_have_text(re.compile(r"^\+\d\d:\d\d\.\d$"))
    log = page.locator("#log")
    assert await log.evaluate("e => e.scrollWidth > e.clientWidth + 1000")
    await page.locator("#opt-wrap").click()
    await expect(log).to_have_class(re.compile(r"\bwrap\b"))
    assert await log.evaluate("e => e.scrollWidth <= e.clientWidth")
    tall = await page.locator(".row").nth(1).evaluate("r => r.getBoundingClientRect().height")
    assert tall > 100  # the long line wraps onto many display rows
    await page.reload()  # same browser: the choices are remembered
    await expect(page.locator(".row").first.locator(".ts")).to_have_text(re.compile(r"^\+"))
    await expect(page.locator("#log")).to_have_class(re.compile(r"\bwrap\b"))
    watch.check(live_server.key)


async def test_search_asks_the_server_counts_every_match_and_follows_new_lines(
    live_server: LiveServer, browser: Browser
) -> None:
    lines = [f"{i} {E}1mneed{E}0mle" if i % 9 == 0 else f"{i} hay" for i in range(12_000)]
    client, job, page, watch = await live_job(browser, live_server, "search", lines)
    before = len([u for u in watch.urls if "/events?" in u])
    await page.locator("#search-q").fill("NEEDLE")
    count = page.locator("#search-count")
    await expect(count).to_have_text("1 of 1,334")
    assert [u for u in watch.urls if "/search?" in u], "the server searched"
    assert len([u for u in watch.urls if "/events?" in u]) - before <= 2, "no download to scan"
    await page.wait_for_function(
        "() => streamerSearch.done && streamerSearch.matches.length === 1334"
    )
    await page.locator("#search-prev").click()  # wraps to the last match, far away
    await expect(count).to_have_text("1,334 of 1,334")
    current = page.locator(".row:has(mark.current)")  # a match across a colour change: 2 marks
    await expect(current).to_have_count(1)
    await expect(current).to_have_attribute("data-line", "11998")
    await page.locator("#search-next").click()
    await expect(count).to_have_text("1 of 1,334")
    await append_lines(client, job, ["a new needle"])
    await expect(count).to_have_text("1 of 1,335")
    await page.locator("#search-regex").click()
    await page.locator("#search-q").fill("(a)\\1")
    await expect(count).to_have_text(re.compile("search failed"))
    watch.errors = [e for e in watch.errors if "400" not in e]  # the refused regex, on purpose
    watch.check(live_server.key)


async def test_cancel_status_in_title_and_favicon_outage_and_the_streamed_count(
    live_server: LiveServer, browser: Browser
) -> None:
    client, job, page, watch = await live_job(browser, live_server, "deploy", ["one"])
    await expect(page).to_have_title(re.compile(r"deploy · running"))
    running_icon = await page.locator("#favicon").get_attribute("href")
    assert running_icon and running_icon.startswith("data:image/svg+xml")

    # The header counts what the stream delivers: with every job poll answered by a
    # stale copy (1 event), it still follows the appends.
    stale = (await client.get(f"/api/v1/jobs/{job}")).json()
    await page.route(f"**/api/v1/jobs/{job}", lambda route: route.fulfill(json=stale))
    await append_lines(client, job, ["two", "three"])
    await expect(page.locator("#job-meta")).to_have_text(re.compile(r"· 3 events"))
    await page.unroute(f"**/api/v1/jobs/{job}")

    await live_server.stop()
    await expect(page.locator("#outage")).to_be_visible(timeout=10_000)
    await expect(page.locator("#job-status")).to_have_text("unreachable")
    await expect(page).to_have_title(re.compile("unreachable"))
    await live_server.start()
    await expect(page.locator("#outage")).to_be_hidden(timeout=15_000)
    await expect(page.locator("#job-status")).to_have_text("running")

    cancel = page.locator("#cancel")
    await cancel.click()
    await expect(cancel).to_have_text("Confirm cancel")
    await cancel.click()
    await expect(page.locator("#banner")).to_have_text("✖ Cancelled")
    await expect(page.locator("#job-status")).to_have_text("cancelled")
    await expect(cancel).to_be_hidden()
    client = live_server.client()
    assert (await client.get(f"/api/v1/jobs/{job}")).json()["status"] == "cancelled"
    await expect(page).to_have_title(re.compile("cancelled"))
    assert await page.locator("#favicon").get_attribute("href") != running_icon
    watch.check(live_server.key)


async def test_view_raw_opens_the_plain_log_in_a_new_tab_with_a_stream_token(
    live_server: LiveServer, browser: Browser
) -> None:
    client = live_server.client()
    job = await live_server.create_job(name="raw")
    await append(client, job, {"data": f"{E}32mgreen{E}0m\n"}, {"data": "plain\n"})
    page, watch = await open_job(browser, live_server, job)
    await expect(page.locator(".row")).to_have_count(2)
    async with page.context.expect_page() as info:
        await page.locator("#raw").click()
    tab = await info.value
    await tab.wait_for_url(re.compile(r"/log\?token=sst_"))
    assert live_server.key not in tab.url
    body = await tab.evaluate("() => document.body.innerText")
    assert body.strip() == (await client.get(f"/api/v1/jobs/{job}/log")).text.strip()
    watch.check(live_server.key)


async def axe_violations(page: Page) -> list[dict[str, Any]]:
    await page.add_script_tag(path=str(AXE))
    found: list[dict[str, Any]] = await page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ["violations"]})).violations
            .filter(v => v.impact === "serious" || v.impact === "critical")
            .map(v => ({id: v.id, nodes: v.nodes.length, target: v.nodes[0]?.target}))"""
    )
    return found


@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_no_serious_accessibility_violations_on_any_page(
    live_server: LiveServer, browser: Browser, scheme: str
) -> None:
    """axe-core (the committed version) in the page: sign-in, job list, a coloured log."""
    client = live_server.client()
    job = await live_server.create_job(name="a11y")
    await append(client, job, *CI, {"type": "complete", "success": False})
    context = await browser.new_context(color_scheme=scheme, bypass_csp=True)  # to inject axe
    page = await context.new_page()
    await page.goto(f"{live_server.url}/")
    await expect(page.locator("#signin-key")).to_be_focused()
    assert await axe_violations(page) == []
    await context.add_init_script(
        f"sessionStorage.setItem('streamer.apiKey', {live_server.key!r});"
    )
    await page.goto(f"{live_server.url}/")
    await expect(page.locator("#jobs-body tr").first).to_be_visible()
    assert await axe_violations(page) == []
    await page.goto(f"{live_server.url}/?job={job}")
    await expect(page.locator(".row.head").first).to_be_visible()
    await page.locator("#search-q").fill("runner")
    await expect(page.locator("#search-count")).to_have_text("1 of 1")
    assert await axe_violations(page) == []


async def test_phone_layout_scrolls_no_page_sideways_and_the_theme_switch_sticks(
    live_server: LiveServer, browser: Browser
) -> None:
    for n in range(3):
        await live_server.create_job(name=f"a job with a rather long name number {n} for phones")
    page = await signed_in_page(
        browser, live_server.key, viewport={"width": 360, "height": 740}, color_scheme="light"
    )
    await page.goto(f"{live_server.url}/")
    await expect(page.locator("#jobs-body tr")).to_have_count(3)
    wide = "() => document.documentElement.scrollWidth <= window.innerWidth"
    assert await page.evaluate(wide)
    assert await page.locator(".list").evaluate("e => e.scrollWidth <= e.clientWidth")
    html = page.locator("html")
    await expect(html).to_have_attribute("data-theme", "light")
    light_bg = await page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    await page.locator("#theme").click()  # auto -> light
    await page.locator("#theme").click()  # light -> dark
    await expect(html).to_have_attribute("data-theme", "dark")
    assert await page.evaluate("() => getComputedStyle(document.body).backgroundColor") != light_bg
    job = await live_server.create_job(name="phone")
    await append(live_server.client(), job, *CI)
    watch = Watch(page)
    await page.goto(f"{live_server.url}/?job={job}")
    await expect(html).to_have_attribute("data-theme", "dark")  # remembered
    await expect(page.locator(".row.head").first).to_be_visible()
    overflow = await page.evaluate(
        """() => [document.documentElement.scrollWidth, window.innerWidth,
            [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right
                > window.innerWidth + 1).map(e => e.id || e.className).slice(0, 5)]"""
    )
    assert overflow[0] <= overflow[1], overflow
    watch.check(live_server.key)
