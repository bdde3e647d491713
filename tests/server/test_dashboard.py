"""The web dashboard in a real headless Chromium against a real server.

Skipped, with the reason, where Playwright for Python or Debian's ``chromium`` is
missing. Waits are Playwright's (selectors, ``expect``, functions), never sleeps.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

pytest.importorskip(
    "playwright.async_api", reason="Playwright for Python is not installed (pip install playwright)"
)

from playwright.async_api import Browser, Page, expect  # noqa: E402

from streamer.server.settings import Settings  # noqa: E402

from ..support.dashboard_support import (  # noqa: E402
    append,
    append_lines,
    chromium_path,
    launch,
    server_events,
    signed_in_page,
)
from ..support.live import LiveServer, serving  # noqa: E402

if chromium_path() is None:
    pytest.skip(
        "Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True
    )

E = "\x1b["
# GitHub's dark terminal palette, as style.css sets it for prefers-color-scheme: dark.
DARK = {1: "rgb(255, 123, 114)", 2: "rgb(63, 185, 80)", 3: "rgb(210, 153, 34)"}
DARK.update({4: "rgb(88, 166, 255)", 5: "rgb(188, 140, 255)", 6: "rgb(57, 197, 207)"})
DARK.update({13: "rgb(210, 168, 255)"})


# One Chromium for the module (a launch costs seconds), so one event loop for it too.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module")
async def live_server(settings: Settings) -> AsyncIterator[LiveServer]:
    """conftest's server, on the module's event loop (one Chromium serves the module)."""
    async with serving(settings) as server:
        yield server


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def chromium() -> AsyncIterator[Browser]:
    async with launch() as browser:
        yield browser


@pytest_asyncio.fixture(loop_scope="module")
async def browser(chromium: Browser) -> AsyncIterator[Browser]:
    """The shared browser; whatever a test opened in it is closed after the test."""
    yield chromium
    for context in chromium.contexts:
        await context.close()


class Watch:
    """What a page did that a test must check: errors, CSP violations, request URLs."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        self.urls: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", self._console)
        page.on("request", lambda request: self.urls.append(request.url))

    def _console(self, message: Any) -> None:
        # A refused connection while the server restarts is expected noise.
        if message.type == "error" and "ERR_CONNECTION_REFUSED" not in message.text:
            self.errors.append(message.text)

    def count(self, fragment: str) -> int:
        """How many requests went to a URL containing ``fragment``."""
        return sum(1 for url in self.urls if fragment in url)

    def check(self, key: str) -> None:
        assert self.errors == [], self.errors
        assert not [u for u in self.urls if key in u], "an API key reached a URL"
        assert not [u for u in self.urls if not u.startswith("http://127.0.0.1:")], self.urls


async def open_job(browser: Browser, server: LiveServer, job: str, hash_: str = "") -> Any:
    page = await signed_in_page(browser, server.key, color_scheme="dark")
    watch = Watch(page)
    await page.goto(f"{server.url}/?job={job}{hash_}")
    return page, watch


async def model_events(page: Page) -> list[list[Any]]:
    rows: list[list[Any]] = await page.evaluate(
        "() => streamerLog.snapshot().map(e => [e.index, e.type, e.data])"
    )
    return rows


async def test_list_shows_own_jobs_only_pages_filters_and_updates_live(
    live_server: LiveServer, browser: Browser
) -> None:
    """Sign in with the keyboard; own jobs newest first, paged; status changes appear."""
    mine = [await live_server.create_job(name=f"mine-{i}") for i in range(3)]
    other = live_server.client(await live_server.new_user("other"))
    theirs = await live_server.create_job(other, name="theirs")
    page = await (await browser.new_context(color_scheme="light")).new_page()
    watch = Watch(page)
    await page.goto(f"{live_server.url}/?limit=2")

    await expect(page.locator("#signin-key")).to_be_focused()
    await page.keyboard.type("stk_not-a-real-key")
    await page.keyboard.press("Enter")
    await expect(page.locator("#signin-error")).to_contain_text("not accepted")
    await page.locator("#signin-key").fill("")
    await page.keyboard.type(live_server.key)
    await page.keyboard.press("Enter")

    names = page.locator("#jobs-body .job-name")
    await expect(names).to_have_text(["mine-2", "mine-1"])
    await page.locator("#page-older").focus()
    await page.keyboard.press("Enter")
    await expect(names).to_have_text(["mine-0"])
    await expect(page.locator("#page-older")).to_be_disabled()
    await page.locator("#page-newer").focus()
    await page.keyboard.press("Enter")
    await expect(names).to_have_text(["mine-2", "mine-1"])
    assert theirs not in await page.content()

    client = live_server.client()
    newest = page.locator(f'#jobs-body tr[data-id="{mine[2]}"]')
    await expect(newest.locator(".status")).to_have_text("queued")
    r = await client.patch(f"/api/v1/jobs/{mine[2]}", json={"status": "running"})
    assert r.status_code == 200, r.text
    await append_lines(client, mine[2], ["one", "two"])
    await expect(newest.locator(".status")).to_have_text("running")
    await expect(newest.locator(".events")).to_have_text("2")

    await page.locator("#status-filter").select_option("queued")
    await expect(names).to_have_text(["mine-1", "mine-0"])
    assert "status=queued" in page.url
    await page.locator("#status-filter").select_option("running")
    await expect(names).to_have_text(["mine-2"])

    await page.locator(".job-name").focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#job-title")).to_have_text("mine-2")
    await expect(page.locator('.row[data-index="1"] .txt')).to_have_text("two")
    assert await page.evaluate("() => sessionStorage.getItem('streamer.apiKey')") == live_server.key
    watch.errors = [e for e in watch.errors if "401" not in e]  # the wrong key, on purpose
    watch.check(live_server.key)


async def test_live_lines_follow_jump_to_live_and_complete_banner(
    live_server: LiveServer, browser: Browser
) -> None:
    """Appended lines appear live; the view sticks to the bottom until scrolled up."""
    client = live_server.client()
    job = await live_server.create_job(name="live")
    await client.patch(f"/api/v1/jobs/{job}", json={"status": "running"})
    await append_lines(client, job, [f"early {i}" for i in range(200)])
    page, watch = await open_job(browser, live_server, job)
    last_row = page.locator(".row").last
    await expect(last_row.locator(".txt")).to_have_text("early 199")
    await expect(page.locator("#conn")).to_have_text("live")

    for i in range(5):
        await append_lines(client, job, [f"{E}32mlate {i}{E}0m"])
        await expect(last_row.locator(".txt")).to_have_text(f"late {i}")
    await expect(page.locator("#jump")).to_be_hidden()

    await page.locator("#log").hover()
    await page.mouse.wheel(0, -2000)
    await expect(page.locator("#jump")).to_be_visible()
    await append_lines(client, job, ["while scrolled up"])
    await page.wait_for_function("() => streamerLog.count === 206")
    assert await page.evaluate("() => streamerView.following") is False
    await expect(page.locator('.row[data-index="205"]')).to_have_count(0)  # stayed put
    await page.locator("#jump").focus()
    await page.keyboard.press("Enter")
    await expect(last_row.locator(".txt")).to_have_text("while scrolled up")

    # A burst (3000 events at once) makes the page catch up by pages, not by SSE.
    await append_lines(client, job, [f"burst {i}" for i in range(3000)])
    await page.wait_for_function("() => streamerLog.count === 3206")
    await expect(last_row.locator(".txt")).to_have_text("burst 2999")
    assert await page.evaluate("() => streamerStream.catchUps") >= 1

    await append(client, job, {"type": "complete", "success": False})
    await expect(page.locator("#banner")).to_have_text(re.compile(r"Failed"))
    await expect(page.locator("#banner")).to_have_class(re.compile(r"\bbad\b"))
    await expect(page.locator("#job-status")).to_have_text("failed")
    await expect(last_row).to_have_class(re.compile(r"t-complete"))
    assert await model_events(page) == [
        [e["index"], e["type"], e["data"]] for e in await server_events(client, job)
    ]
    streams = [u for u in watch.urls if "/events/stream" in u]
    assert streams and all(re.search(r"[?&]token=sst_[^&]+", u) for u in streams)
    assert all("from_index=" in u for u in streams)
    watch.check(live_server.key)


async def span_style(page: Page, index: int, text: str) -> dict[str, str]:
    style: dict[str, str] = await page.evaluate(
        """([index, text]) => {
            const row = document.querySelector(`.row[data-index="${index}"] .txt`);
            const node = [...row.querySelectorAll("span")].find(s => s.textContent === text);
            if (!node) return {missing: row.innerHTML};
            const cs = getComputedStyle(node);
            return {color: cs.color, background: cs.backgroundColor, weight: cs.fontWeight,
                    italic: cs.fontStyle, decoration: cs.textDecorationLine,
                    opacity: cs.opacity};
        }""",
        [index, text],
    )
    return style


async def wait_colour(page: Page, index: int, text: str, colour: str) -> None:
    """Until row ``index`` shows ``text`` in ``colour`` (rows restyle once colours resolve)."""
    await page.wait_for_function(
        """([index, text, colour]) => {
            const row = document.querySelector(`.row[data-index="${index}"] .txt`);
            const node = row && [...row.querySelectorAll("span")].find(s => s.textContent === text);
            return !!node && getComputedStyle(node).color === colour;
        }""",
        arg=[index, text, colour],
    )


async def test_ansi_colours_render_as_computed_styles_even_mid_log(
    live_server: LiveServer, browser: Browser
) -> None:
    """16/256/24-bit colours and attributes, carried across events and into a mid-log view."""
    client = live_server.client()
    job = await live_server.create_job(name="colours")
    await append(
        client,
        job,
        {"data": f"{E}31mred{E}0m plain\n"},
        {"data": f"{E}1;32mbold green{E}0m\n"},
        {"data": f"{E}38;5;196mx256{E}0m {E}38;2;10;20;30mtrue{E}0m {E}48;5;21mbg256{E}0m\n"},
        {"data": f"{E}2mdim{E}22m {E}3mitalic{E}23m {E}4munder{E}24m\n"},
        {"data": f"{E}33mcarried\n"},
        {"data": "still yellow\n"},
        {"data": f"{E}0;44mblue bg{E}0m {E}95mbright{E}0m\n"},
        {"data": f"10%\r20%\r{E}32m30%{E}0m\n"},
        {"type": "step", "data": "Package"},
        {"type": "complete", "success": True},
    )
    page, watch = await open_job(browser, live_server, job)
    await expect(page.locator('.row[data-index="9"]')).to_be_visible()
    step = page.locator('.row[data-index="8"]')
    await expect(step).to_have_class(re.compile(r"\bt-step\b"))
    await expect(step.locator(".dur")).to_have_text(re.compile(r"^\d+(ms|\.\ds)$"))
    assert (await step.evaluate("r => getComputedStyle(r).fontWeight")) == "600"
    assert (await span_style(page, 0, "red"))["color"] == DARK[1]
    green = await span_style(page, 1, "bold green")
    assert green["color"] == DARK[2] and green["weight"] == "700"
    assert (await span_style(page, 2, "x256"))["color"] == "rgb(255, 0, 0)"
    assert (await span_style(page, 2, "true"))["color"] == "rgb(10, 20, 30)"
    assert (await span_style(page, 2, "bg256"))["background"] == "rgb(0, 0, 255)"
    assert (await span_style(page, 3, "dim"))["opacity"] == "0.6"
    assert (await span_style(page, 3, "italic"))["italic"] == "italic"
    assert (await span_style(page, 3, "under"))["decoration"] == "underline"
    assert (await span_style(page, 4, "carried"))["color"] == DARK[3]
    assert (await span_style(page, 5, "still yellow"))["color"] == DARK[3]
    assert (await span_style(page, 6, "blue bg"))["background"] == DARK[4]
    assert (await span_style(page, 6, "bright"))["color"] == DARK[13]
    assert await page.locator('.row[data-index="7"] .txt').text_content() == "30%"
    assert (await span_style(page, 7, "30%"))["color"] == DARK[2]
    watch.check(live_server.key)

    # Mid-log: magenta set at event 5 (never reset) until a reset to cyan at 1500.
    mid = await live_server.create_job(name="mid-log")
    lines = [f"line {i}" for i in range(2600)]
    lines[5] = f"{E}35mline 5"
    lines[1500] = f"{E}0m{E}36mline 1500"
    await append_lines(client, mid, lines)
    page, watch = await open_job(browser, live_server, mid, "#L2501")
    row = page.locator('.row[data-index="2500"]')
    await expect(row.locator(".txt")).to_have_text("line 2500")
    await wait_colour(page, 2500, "line 2500", DARK[6])
    # The reset at 1500 was enough: the first chunk was never needed.
    assert await page.evaluate("() => streamerLog.chunks.has(0)") is False
    assert await page.locator(".row").count() < 60, "only visible rows are in the DOM"
    await page.goto(f"{live_server.url}/?job={mid}#L1201")
    await expect(page.locator('.row[data-index="1200"] .txt')).to_have_text("line 1200")
    await wait_colour(page, 1200, "line 1200", DARK[5])
    watch.check(live_server.key)


async def test_server_restart_while_following_loses_and_repeats_nothing(
    live_server: LiveServer, browser: Browser
) -> None:
    """Across a restart (and a type EventSource cannot see) the page holds exactly 0..k."""
    client = live_server.client()
    job = await live_server.create_job(name="restart")
    await client.patch(f"/api/v1/jobs/{job}", json={"status": "running"})
    await append_lines(client, job, [f"before {i}" for i in range(30)])
    page, watch = await open_job(browser, live_server, job)
    await expect(page.locator("#conn")).to_have_text("live")
    await page.wait_for_function("() => streamerLog.count === 30")

    await live_server.stop()
    await expect(page.locator("#conn")).to_have_text("reconnecting…")
    await live_server.start()  # same port: the page's origin
    client = live_server.client()
    await append_lines(client, job, [f"{E}3{i % 8}mafter {i}{E}0m" for i in range(30)])
    await expect(page.locator("#conn")).to_have_text("live", timeout=15_000)
    await page.wait_for_function("() => streamerLog.count === 60")

    await live_server.restart()
    client = live_server.client()
    # A custom type no listener is registered for, then lines: the gap is filled by page.
    await append(client, job, {"type": "deploy.phase", "data": "unseen by EventSource\n"})
    await append_lines(client, job, [f"tail {i}" for i in range(20)])
    await append(client, job, {"type": "complete", "success": True})
    await expect(page.locator("#banner")).to_have_text(re.compile("Succeeded"), timeout=15_000)

    expected = [[e["index"], e["type"], e["data"]] for e in await server_events(client, job)]
    assert len(expected) == 82
    assert await model_events(page) == expected
    await expect(page.locator(".row").last).to_have_class(re.compile(r"t-complete"))
    visible = await page.evaluate("() => streamerView.visibleRows()")
    assert visible and [i for i, _ in visible] == list(range(visible[0][0], 82))
    assert visible[-2][1] == "tail 19"
    watch.check(live_server.key)


async def test_permalink_opens_highlighted_and_search_finds_every_match(
    live_server: LiveServer, browser: Browser, tmp_path: Path
) -> None:
    """#L121-L141 (raw-log lines, from 1: events 120-140 here) opens there, selected;
    search counts and visits each match; download."""
    client = live_server.client()
    job = await live_server.create_job(name="permalink")
    lines = [f"line {i}" + (" needle" if i % 37 == 0 else "") for i in range(300)]
    lines[74] += f" {E}1mNEEDLE{E}0m again"
    await append_lines(client, job, lines)
    await append(client, job, {"type": "complete", "success": True})
    page, watch = await open_job(browser, live_server, job, "#L121-L141")

    first = page.locator('.row[data-index="120"]')
    await expect(first).to_have_class(re.compile(r"\bsel\b"))
    assert await page.evaluate("() => streamerView.visible(120)")
    selected = await page.evaluate(
        "() => [...document.querySelectorAll('.row.sel')].map(r => +r.dataset.index)"
    )
    assert selected == list(range(120, 141))
    await expect(page.locator("#jump")).to_be_visible()

    await page.locator('.row[data-index="125"] .ln').click()
    await page.locator('.row[data-index="130"] .ln').click(modifiers=["Shift"])
    assert page.url.endswith("#L126-L131")

    await page.locator("#log").focus()
    await page.keyboard.press("/")
    await expect(page.locator("#search-q")).to_be_focused()
    await page.keyboard.type("needle")
    # The server counts matching lines: line 74 holds "needle" twice, one match.
    expected = [i for i in range(300) if i % 37 == 0]
    count = page.locator("#search-count")
    await expect(count).to_have_text(f"1 of {len(expected)}")
    assert await page.evaluate("() => streamerSearch.idx") == expected
    for index in expected:  # Enter walks every match in order, each shown as current
        await page.wait_for_function(
            """(i) => {
                const marks = document.querySelectorAll("mark.current");
                return marks.length === 1 && marks[0].closest(".row")?.dataset.index === `${i}`;
            }""",
            arg=index,
        )
        await page.keyboard.press("Enter")
    await expect(count).to_have_text(f"1 of {len(expected)}")
    await page.keyboard.press("Shift+Enter")
    await expect(count).to_have_text(f"{len(expected)} of {len(expected)}")

    async with page.expect_download() as info:
        await page.locator("#download").click()
    download = await info.value
    saved = tmp_path / "log.txt"
    await download.save_as(saved)
    assert saved.read_text() == (await client.get(f"/api/v1/jobs/{job}/log")).text
    watch.check(live_server.key)


ANSI_CASES: list[tuple[str, str, list[list[Any]]]] = [
    # (event data, expected row text, [[text of a run, its colour] ...])
    ("abcdef\rXY", "XYcdef", []),  # \r overwrites, it does not erase
    ("abcdef\r\x1b[Kxy", "xy", []),  # ...unless the line is erased
    ("abc\x1b[Kdef", "abcdef", []),
    ("a\bb", "b", []),
    ("50%\r", "50%", []),
    ("x\x1b]8;;http://example.com\x07link\x1b]8;;\x07", "xlink", []),  # OSC hyperlink
    ("\x1b[?25lno cursor\x1b[?25h", "no cursor", []),
    ("one\ntwo\n", "one\u21b5two", []),  # more than one line in an event
    ("\tx\r\n", "\tx", []),
    ("\x1b[38:2::1:2:3mcolon\x1b[m", "colon", [["colon", "rgb(1, 2, 3)"]]),
    ("\x1b[38:5:200mcolon256", "colon256", [["colon256", "rgb(255, 0, 215)"]]),
    ("\x1b[38;5;244mgrey", "grey", [["grey", "rgb(128, 128, 128)"]]),
    ("\x1b[31mA\x1b[39mB", "AB", [["A", 1], ["B", None]]),
    ("\x1b[1;2mX\x1b[22mY", "XY", [["X", None]]),
]


async def test_ansi_parser_cases_in_the_browser(live_server: LiveServer, browser: Browser) -> None:
    """ansi.js itself: cursor controls, escapes it must drop, colon forms, plainText = runs."""
    page = await signed_in_page(browser, live_server.key, color_scheme="dark")
    await page.goto(f"{live_server.url}/")
    results = await page.evaluate(
        """async (cases) => {
            const m = await import("./ansi.js");
            return cases.map(([data]) => {
                const r = m.runs(data, m.DEFAULT);
                return {
                    text: r.runs.map((x) => x.text).join(""),
                    plain: m.plainText(data),
                    // fg: a palette number below 16 (themed by CSS), else its CSS colour
                    runs: r.runs.map((x) => {
                        const fg = x.state.fg;
                        const css = typeof fg === "number" && fg >= 16 ? m.color256(fg) : fg;
                        return [x.text, css, x.state.bold, x.state.dim];
                    }),
                };
            });
        }""",
        [[data] for data, _, _ in ANSI_CASES],
    )
    for (data, text, colours), got in zip(ANSI_CASES, results, strict=True):
        assert got["text"] == text, (data, got)
        assert got["plain"] == text, (data, got)
        by_text = {run[0]: run for run in got["runs"]}
        for run_text, fg in colours:
            assert by_text[run_text][1] == fg, (data, got)
    bold_dim = results[-1]["runs"]
    assert bold_dim[0] == ["X", None, True, True] and bold_dim[1] == ["Y", None, False, False]
    resets = await page.evaluate(
        """async () => {
            const m = await import("./ansi.js");
            return [m.advance(m.DEFAULT, "\x1b[31mx\x1b[0m").reset,
                    m.advance(m.DEFAULT, "\x1b[31mx").reset,
                    m.advance(m.DEFAULT, "\x1b[31mx\x1b[0m").state === m.DEFAULT,
                    m.runs("x".repeat(50000), m.DEFAULT).runs[0].text.length];
        }"""
    )
    assert resets == [True, False, True, 20000]
