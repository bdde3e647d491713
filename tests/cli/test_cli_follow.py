"""``streamer follow``: the printed log is the stored log, across restarts; exit codes say how."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import httpx
import pytest

from streamer.cli.client import Client, ClientError, ClientSettings, SSEParser
from streamer.cli.main import main
from streamer.cli.tail import LineCounter

from ..support.live import LiveServer

Capsys = pytest.CaptureFixture[str]


async def run_main(capsys: Capsys, *argv: str) -> tuple[int, str, str]:
    """``main(argv)`` in a thread: it runs its own event loop, and the test's is busy."""
    code = await asyncio.wait_for(asyncio.to_thread(main, list(argv)), 60)
    out, err = capsys.readouterr()
    return code, out, err


async def cli(capsys: Capsys, server: LiveServer, *argv: str) -> tuple[int, str, str]:
    """``main(argv)`` against ``server``, with a retry budget that bounds every wait."""
    options = ["--url", server.url, "--api-key", server.key, "--retry-for", "20"]
    args = list(argv)
    at = args.index("--") if "--" in args else len(args)  # before CMD, for ``run``
    return await run_main(capsys, *args[:at], *options, *args[at:])


async def finished_job(server: LiveServer, lines: list[str], **complete: Any) -> str:
    job = await server.create_job(name="done")
    events: list[dict[str, Any]] = [{"data": line} for line in lines]
    if complete:
        events.append({"type": "complete", **complete})
    r = await server.client().post(f"/api/v1/jobs/{job}/events", json={"events": events})
    assert r.status_code == 201, r.text
    return job


def line(i: int) -> str:
    return f"line {i} ünïcödé\u2028✓\n"  # U+2028: str.splitlines() would break the SSE frame


@pytest.mark.parametrize("success", [True, False])
async def test_follow_resumes_across_two_restarts_printing_the_stored_log_exactly(
    live_server: LiveServer, capsys: Capsys, success: bool
) -> None:
    """A live follower sees the server restart twice mid-stream: no gap, no duplicate."""
    total = 3000
    job = await live_server.create_job(name="restarts")
    replays: asyncio.Queue[str] = asyncio.Queue()

    async def after_replay(job_id: str) -> None:
        replays.put_nowait(job_id)

    live_server.hooks.after_replay = after_replay
    server_up, finish = asyncio.Event(), asyncio.Event()
    server_up.set()
    reached = {1000: asyncio.Event(), 2000: asyncio.Event()}

    async def produce() -> None:
        headers = {"Authorization": f"Bearer {live_server.key}"}
        async with httpx.AsyncClient(base_url=live_server.url, headers=headers) as http:
            i = 0
            while i < total:
                batch = {"events": [{"data": line(j)} for j in range(i, min(i + 50, total))]}
                try:
                    r = await http.post(
                        f"/api/v1/jobs/{job}/events", params={"expected_index": i}, json=batch
                    )
                except httpx.TransportError:
                    await server_up.wait()  # the test is restarting the server
                    continue
                assert r.status_code in (201, 409), r.text
                i = r.json()["last_index"] + 1 if r.status_code == 201 else r.json()["next_index"]
                for mark, event in reached.items():
                    if i >= mark:
                        event.set()
            await finish.wait()
            r = await http.post(
                f"/api/v1/jobs/{job}/events", json={"type": "complete", "success": success}
            )
            assert r.status_code == 201, r.text

    producer = asyncio.create_task(produce())
    follower = asyncio.create_task(cli(capsys, live_server, "follow", job))
    await asyncio.wait_for(replays.get(), 20)  # the follower is connected and live
    for mark in reached:
        await asyncio.wait_for(reached[mark].wait(), 20)
        server_up.clear()
        await live_server.restart()
        server_up.set()
        await asyncio.wait_for(replays.get(), 20)  # it reconnected and caught up
    finish.set()
    await asyncio.wait_for(producer, 20)
    code, out, err = await follower
    log = (await live_server.client().get(f"/api/v1/jobs/{job}/log")).text
    assert out == log == "".join(line(i) for i in range(total)), err
    assert code == (0 if success else 1), err
    assert err.count("retrying") >= 2, "both restarts were seen by the follower"


async def test_follow_starts_at_from_index_or_tail(live_server: LiveServer, capsys: Capsys) -> None:
    job = await finished_job(live_server, [f"{i}\n" for i in range(10)], success=True)
    assert await cli(capsys, live_server, "follow", job, "--from-index", "7") == (
        0,
        "7\n8\n9\n",
        "",
    )
    code, out, _ = await cli(capsys, live_server, "follow", job, "--tail", "3")
    assert (code, out) == (0, "7\n8\n9\n"), "lines: the complete event is not one"
    code, out, _ = await cli(capsys, live_server, "follow", job, "--tail", "3", "--json")
    assert [json.loads(row)["index"] for row in out.splitlines()] == [8, 9, 10], "--json: events"
    code, out, _ = await cli(capsys, live_server, "follow", job, "--from-index", "11")
    assert (code, out) == (0, ""), "already past the end: 204, status from the job"


async def test_tail_counts_lines_wherever_events_cut_them(
    live_server: LiveServer, capsys: Capsys
) -> None:
    """Lines, not events: an event with two lines counts two, a partial line joins the
    next event's, and a progress line with carriage returns is one line (escaped here,
    off a terminal)."""
    events = ["a\nb\n", "c", "d\n", "e\r50%\r100%\n", "f"]
    job = await finished_job(live_server, events, success=True)
    expected = {
        1: "f",
        2: "e\\r50%\\r100%\nf",
        3: "cd\ne\\r50%\\r100%\nf",
        4: "b\ncd\ne\\r50%\\r100%\nf",
        5: "a\nb\ncd\ne\\r50%\\r100%\nf",
        9: "a\nb\ncd\ne\\r50%\\r100%\nf",
        0: "",
    }
    for lines, text in expected.items():
        code, out, err = await cli(capsys, live_server, "follow", job, "--tail", str(lines))
        assert (code, out) == (0, text), (lines, err)
    code, out, _ = await cli(capsys, live_server, "follow", job, "--tail", "3", "--timestamps")
    stamp = out.split(" ", 1)[0]
    assert out == f"{stamp} cd\n{stamp} e\\r50%\\r100%\n{stamp} f"


async def test_tail_reads_back_across_pages_and_stays_exact(
    live_server: LiveServer, capsys: Capsys
) -> None:
    lines = [f"{i}\n" for i in range(1800)]
    job = await finished_job(live_server, lines, success=False)
    code, out, _ = await cli(capsys, live_server, "follow", job, "--tail", "1234")
    assert code == 1 and out == "".join(lines[-1234:])


@pytest.mark.parametrize("seed", range(40))
def test_line_counter_agrees_with_tail_n_on_random_logs(seed: int) -> None:
    """Random cuts of random text into events (empty and null data too): the start the
    counter finds prints exactly what ``tail -n N`` prints of the whole text."""
    rng = random.Random(seed)
    text = "".join(rng.choice(["x", "yz", "\n", "\r", " "]) for _ in range(rng.randint(0, 60)))
    cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, rng.randint(0, 12))))
    datas: list[str | None] = [
        text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)
    ]
    for at in rng.sample(range(len(datas) + 1), 2):
        datas.insert(at, rng.choice([None, ""]))
    for n in range(1, 12):
        counter, start = LineCounter(n), (0, 0)
        for index in reversed(range(len(datas))):
            offset = counter.back(datas[index])
            if offset is not None:
                start = (index, offset)
                break
        index, offset = start
        printed = (datas[index] or "")[offset:] + "".join(d or "" for d in datas[index + 1 :])
        assert printed == tail_n(text, n), (datas, n)


def tail_n(text: str, n: int) -> str:
    """What ``tail -n N`` prints: lines end at LF; a last line without one counts."""
    lines = text.split("\n")
    kept = [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    return "".join(kept[-n:])


async def test_follow_tail_of_a_live_job_then_resumes_from_where_it_started(
    live_server: LiveServer, capsys: Capsys
) -> None:
    job = await finished_job(live_server, [f"{i}\n" for i in range(5)])
    follower = asyncio.create_task(cli(capsys, live_server, "follow", job, "--tail", "2"))
    replays: asyncio.Queue[str] = asyncio.Queue()

    async def after_replay(job_id: str) -> None:
        replays.put_nowait(job_id)

    live_server.hooks.after_replay = after_replay
    await asyncio.wait_for(replays.get(), 20)
    await live_server.restart()
    r = await live_server.client().post(
        f"/api/v1/jobs/{job}/events",
        json={"events": [{"data": "5\n"}, {"type": "complete", "success": True}]},
    )
    assert r.status_code == 201
    code, out, _ = await follower
    assert (code, out) == (0, "3\n4\n5\n")


async def test_json_prints_one_parseable_event_per_line(
    live_server: LiveServer, capsys: Capsys
) -> None:
    job = await finished_job(live_server, ["a\n", "\x1b[2Jb\x9b\n"], success=False)
    code, out, _ = await cli(capsys, live_server, "follow", job, "--json")
    events = [json.loads(row) for row in out.splitlines()]
    assert code == 1
    assert [e["index"] for e in events] == [0, 1, 2]
    assert events[1]["data"] == "\x1b[2Jb\x9b\n" and "\x1b" not in out and "\x9b" not in out
    assert events[-1]["type"] == "complete" and events[-1]["success"] is False


async def test_timestamps_prefix_each_line_with_its_event_time(
    live_server: LiveServer, capsys: Capsys
) -> None:
    job = await finished_job(live_server, ["a\nb\n"], success=True)
    _, out, _ = await cli(capsys, live_server, "follow", job, "--timestamps")
    stamp = out.split(" ", 1)[0]
    assert stamp.endswith("Z") and out == f"{stamp} a\n{stamp} b\n"


async def test_colour_is_stripped_off_a_terminal_unless_always(
    live_server: LiveServer, capsys: Capsys
) -> None:
    job = await finished_job(live_server, ["\x1b[1;32mok\x1b[0m \x1b]0;t\x07\n"], success=True)
    _, out, _ = await cli(capsys, live_server, "follow", job)
    assert out == "ok \\x1b]0;t\\x07\n"
    _, out, _ = await cli(capsys, live_server, "follow", job, "--color=always")
    assert out == "\x1b[1;32mok\x1b[0m \\x1b]0;t\\x07\n\x1b[0m"


async def test_exit_status_for_each_outcome(live_server: LiveServer, capsys: Capsys) -> None:
    ok = await finished_job(live_server, ["x\n"], success=True)
    failed = await finished_job(live_server, ["x\n"], success=False)
    cancelled = await live_server.create_job()
    r = await live_server.client().patch(f"/api/v1/jobs/{cancelled}", json={"status": "cancelled"})
    assert r.status_code == 200
    assert (await cli(capsys, live_server, "follow", ok))[0] == 0
    assert (await cli(capsys, live_server, "follow", failed))[0] == 1
    assert (await cli(capsys, live_server, "follow", cancelled))[0] == 1
    assert (await cli(capsys, live_server, "follow", failed, "--from-index", "2"))[0] == 1

    code, _, err = await cli(capsys, live_server, "follow", "no-such-job")
    assert code == 1 and "not found" in err and "jobs list" in err
    url = live_server.url
    other = await live_server.new_user("other")
    code, _, err = await run_main(capsys, "follow", ok, "--url", url, "--api-key", other)
    assert code == 1 and "not found" in err, "another user's job is a missing one"
    code, _, err = await run_main(capsys, "follow", ok, "--url", url, "--api-key", "stk_nope")
    assert code == 1 and "401" in err
    dead = ["--url", "http://127.0.0.1:9", "--api-key", "k", "--retry-for", "0.3"]
    code, _, err = await run_main(capsys, "follow", ok, *dead)
    assert code == 3 and "gave up" in err
    assert "cannot connect to http://127.0.0.1:9 (connection refused)" in err, "plain words"
    assert "Error" not in err, "no exception class names"
    assert "is the server running? Check --url / STREAMER_URL" in err

    assert (await cli(capsys, live_server, "follow", ok, "--from-index", "99"))[0] == 2
    both = ("--tail", "1", "--from-index", "1")
    assert (await cli(capsys, live_server, "follow", ok, *both))[0] == 2
    assert (await run_main(capsys, "follow"))[0] == 2
    assert (await run_main(capsys, "follow", ok, "--url", "ftp://x", "--api-key", "k"))[0] == 2


# --- the client's resume logic, against scripted responses ---------------------------


def sse(*events: tuple[int, str], comment: str = "connected next_index=0") -> bytes:
    body = f": {comment}\r\n\r\n"
    for index, etype in events:
        data = json.dumps(
            {"index": index, "type": etype, "data": f"{index}\n", "success": True, "timestamp": "T"}
        )
        body += f"id: {index}\r\nevent: {etype}\r\ndata: {data}\r\n\r\n"
    return body.encode()


def scripted(responses: list[httpx.Response]) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return responses.pop(0)

    return httpx.MockTransport(handler), seen


async def collect(transport: httpx.MockTransport, **kwargs: Any) -> list[int]:
    client = Client(
        ClientSettings("http://test", "k"),
        backoff_base=0.001,
        backoff_cap=0.01,
        transport=transport,
    )
    async with client:
        return [e.index async for batch in client.events("j", **kwargs) for e in batch]


async def test_client_drops_duplicates_reconnects_on_gaps_and_retries_only_transient() -> None:
    transport, seen = scripted(
        [
            httpx.Response(200, content=sse((0, "log"), (1, "log"))),  # ends early: a restart
            httpx.Response(503, json={"detail": "busy"}),
            httpx.Response(200, content=sse((1, "log"), (2, "log"), (4, "log"))),  # dup, gap
            httpx.Response(200, content=sse((3, "log"), (4, "complete"))),
        ]
    )
    assert await collect(transport) == [0, 1, 2, 3, 4]
    assert [r.headers.get("last-event-id") for r in seen] == [None, "1", "1", "2"]

    transport, seen = scripted([httpx.Response(404, json={"detail": "job not found"})])
    with pytest.raises(ClientError, match="job not found") as info:
        await collect(transport)
    assert info.value.status == 404 and len(seen) == 1, "a 404 is a verdict, not retried"

    transport, seen = scripted([httpx.Response(204), httpx.Response(200)])
    assert await collect(transport, from_index=9) == [] and len(seen) == 1


async def test_tail_start_is_remembered_from_the_connected_comment() -> None:
    transport, seen = scripted(
        [
            httpx.Response(200, content=sse(comment="connected next_index=7")),
            httpx.Response(200, content=sse((7, "complete"), comment="connected next_index=7")),
        ]
    )
    assert await collect(transport, tail=2) == [7]
    assert seen[0].url.params["tail"] == "2" and seen[1].headers["last-event-id"] == "6"


def test_sse_parser_splits_on_cr_and_lf_only_even_across_chunks() -> None:
    parser = SSEParser()
    frame = 'id: 1\r\nevent: log\r\ndata: {"d":"a\u2028b\x85c"}\r\n\r\n: ping\n\n'.encode()
    items: list[Any] = []
    for i in range(len(frame)):  # one byte at a time: every split point, CR/LF included
        items += parser.feed(frame[i : i + 1])
    assert items == [(b"1", b"log", '{"d":"a\u2028b\x85c"}'.encode()), "ping"]


async def test_follow_grep_prints_stored_then_live_matches_with_raw_line_numbers(
    live_server: LiveServer, capsys: Capsys
) -> None:
    """--grep: the server's search for what is stored (a page at a time), then each new
    event matched as it arrives, ANSI-blind, numbered like the raw log, each line once."""
    job = await live_server.create_job(name="grep")
    client = live_server.client()
    stored = [f"\x1b[31mERR\x1b[0mOR {i}\n" if i % 400 == 0 else f"ok {i}\n" for i in range(2500)]
    stored[7] = "two lines\nan error inside\n"  # line numbers shift by one from here
    r = await client.post(
        f"/api/v1/jobs/{job}/events", json={"events": [{"data": d} for d in stored]}
    )
    assert r.status_code == 201

    replays: asyncio.Queue[str] = asyncio.Queue()

    async def after_replay(job_id: str) -> None:
        replays.put_nowait(job_id)

    live_server.hooks.after_replay = after_replay
    follower = asyncio.create_task(cli(capsys, live_server, "follow", job, "--grep", "error"))
    await asyncio.wait_for(replays.get(), 20)  # it follows live now
    live = ["no\n", "part of an er", "ror line\n", "\x1b[1mError\x1b[0m: late\n"]
    for data in live:
        await client.post(f"/api/v1/jobs/{job}/events", json={"data": data})
    await client.post(f"/api/v1/jobs/{job}/events", json={"type": "complete", "success": False})
    code, out, err = await follower
    expected = ["1: ERROR 0", "9: an error inside"]
    expected += [f"{i + 2}: ERROR {i}" for i in range(400, 2500, 400)]
    # "part of an er" + "ror line": events are matched one by one (as the server does)
    expected += ["2504: Error: late"]
    assert out.splitlines() == expected, err
    assert code == 1

    code, out, _ = await cli(
        capsys, live_server, "follow", job, "--grep", r"^ok 24\d\d$", "--regex"
    )
    assert code == 1 and len(out.splitlines()) == 99  # 2400 is an ERROR line
    code, _, err = await cli(capsys, live_server, "follow", job, "--grep", "(a)\\1", "--regex")
    assert code == 2 and "--grep" in err
    code, _, err = await cli(capsys, live_server, "follow", job, job, "--grep", "ok")
    assert code == 2 and "--grep follows one job" in err
