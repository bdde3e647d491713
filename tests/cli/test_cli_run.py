"""``streamer run``: every line of CMD lands exactly once, in order; CMD's status passes through.

CMD and the test meet at named pipes: CMD reports its job (``STREAMER_JOB_ID``) on
one and waits on another where the test says "go", so the test controls when CMD is
silent or produces output, without sleeping to guess.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from streamer.cli.client import Client, ClientSettings
from streamer.cli.runner import Runner
from streamer.cli.upload import LineBuffer

from ..support.live import LiveServer
from .test_cli_follow import Capsys, cli, run_main


class Fifo:
    """A named pipe the test holds open read-write, so opening it never blocks either side."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    async def receive(self, timeout: float = 20) -> str:
        """One line written by CMD."""
        loop = asyncio.get_running_loop()
        data = b""
        async with asyncio.timeout(timeout):
            while not data.endswith(b"\n"):
                ready: asyncio.Future[None] = loop.create_future()
                loop.add_reader(self.fd, _resolve, ready)
                try:
                    await ready
                finally:
                    loop.remove_reader(self.fd)
                try:
                    data += os.read(self.fd, 1)  # a byte at a time: never past the line
                except BlockingIOError:
                    pass
        return data.decode().rstrip("\n")

    def close(self) -> None:
        os.close(self.fd)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@pytest.fixture
def fifos(tmp_path: Path) -> Iterator[tuple[Fifo, Fifo]]:
    """``FROM`` (CMD → test) and ``TO`` (test → CMD)."""
    pair = Fifo(tmp_path / "from"), Fifo(tmp_path / "to")
    yield pair
    for fifo in pair:
        fifo.close()


def sh(script: str, fifos: tuple[Fifo, Fifo]) -> list[str]:
    prelude = f'FROM="{fifos[0].path}"; TO="{fifos[1].path}"; '
    return ["--", "sh", "-c", prelude + script]


async def stored(server: LiveServer, job: str) -> str:
    return (await server.client().get(f"/api/v1/jobs/{job}/log")).text


async def wait_for_line(server: LiveServer, job: str, text: str, timeout: float = 20) -> None:
    """Until ``text`` is stored: read the live text log from its last event on."""
    async with (
        asyncio.timeout(timeout),
        server.client().stream(
            "GET", f"/api/v1/jobs/{job}/log", params={"follow": "true", "tail": "1"}
        ) as response,
    ):
        seen = ""
        async for chunk in response.aiter_text():
            seen = seen[-len(text) :] + chunk
            if text in seen:
                return
    raise AssertionError(f"{text!r} never stored")


async def test_run_stores_interleaved_output_a_burst_and_a_silence_and_passes_the_status(
    live_server: LiveServer, fifos: tuple[Fifo, Fifo], capsys: Capsys
) -> None:
    script = (
        'echo "$STREAMER_JOB_ID" > "$FROM"; '
        'i=1; while [ $i -le 50 ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); done; '
        "seq 1 100000; "
        'echo "before silence"; echo written > "$FROM"; '
        'read _ < "$TO"; '
        'echo "after silence" >&2; printf "no newline at the end" >&2; '
        "exit 7"
    )
    run = asyncio.create_task(cli(capsys, live_server, "run", "--quiet", *sh(script, fifos)))
    job = await fifos[0].receive()
    assert await fifos[0].receive(timeout=60) == "written"
    # CMD is silent now and its output ends in a line: it must be stored without an exit.
    await wait_for_line(live_server, job, "before silence\n", timeout=60)
    fifos[1].send("go\n")
    code, out, err = await run
    assert code == 7, err
    assert out == "" and f"follow it with: streamer follow {job}" in err

    log = await stored(live_server, job)
    assert log.endswith("after silence\nno newline at the end")
    lines = log.split("\n")
    assert [x for x in lines if x.startswith("out ")] == [f"out {i}" for i in range(1, 51)]
    assert [x for x in lines if x.startswith("err ")] == [f"err {i}" for i in range(1, 51)]
    assert [x for x in lines if x.isdigit()] == [str(i) for i in range(1, 100001)]
    assert len(lines) == 100 + 100000 + 3
    assert lines.index("before silence") > lines.index("100000")
    job_info = (await live_server.client().get(f"/api/v1/jobs/{job}")).json()
    assert job_info["status"] == "failed"


async def test_run_rides_out_a_server_outage_without_loss_or_duplicates(
    live_server: LiveServer, fifos: tuple[Fifo, Fifo], capsys: Capsys
) -> None:
    script = (
        'echo "$STREAMER_JOB_ID" > "$FROM"; seq 1 300; '
        'read _ < "$TO"; seq 301 20000; echo produced > "$FROM"; '
        'read _ < "$TO"; echo back'
    )
    run = asyncio.create_task(cli(capsys, live_server, "run", "--quiet", *sh(script, fifos)))
    job = await fifos[0].receive()
    await wait_for_line(live_server, job, "300\n")
    await live_server.stop()
    fifos[1].send("go\n")
    assert await fifos[0].receive() == "produced"  # all of it was written while down
    await asyncio.sleep(2)  # the outage itself: the runner keeps failing and retrying
    await live_server.start()
    fifos[1].send("go\n")
    code, _, err = await run
    assert code == 0, err
    assert "retrying" in err
    assert await stored(live_server, job) == "".join(f"{i}\n" for i in range(1, 20001)) + "back\n"


class LoseAnswers(httpx.AsyncBaseTransport):
    """Delivers every other append to the server, then loses its answer: stored, yet unknown."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.appends = 0
        self.statuses: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "POST" and request.url.path.endswith("/events"):
            self.appends += 1
            self.statuses.append(response.status_code)
            if self.appends % 2 == 1:
                await response.aread()
                await response.aclose()
                raise httpx.ReadError("the answer was lost")
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_an_append_whose_answer_was_lost_is_not_stored_twice(
    live_server: LiveServer,
) -> None:
    transport = LoseAnswers()
    settings = ClientSettings(live_server.url, live_server.key)
    async with Client(settings, backoff_base=0.01, transport=transport) as client:
        runner = Runner(
            client,
            ["sh", "-c", "seq 1 3000"],
            quiet=True,
            batch_events=500,
            notice=lambda message: None,
        )
        assert await runner.run() == 0
    jobs = (await live_server.client().get("/api/v1/jobs")).json()["jobs"]
    job = jobs[0]
    assert job["status"] == "completed"
    assert await stored(live_server, job["id"]) == "".join(f"{i}\n" for i in range(1, 3001))
    lost = (transport.appends + 1) // 2
    assert lost >= 4, "line batches and the complete event each lost an answer"
    assert transport.statuses.count(409) == lost, "each retry was told it had landed"


async def test_ctrl_c_is_forwarded_once_and_the_job_is_cancelled(live_server: LiveServer) -> None:
    script = 'trap "echo got INT; exit 5" INT; echo start; while :; do sleep 0.05; done'
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamer",
        "run",
        "--url",
        live_server.url,
        "--api-key",
        live_server.key,
        "--",
        "sh",
        "-c",
        script,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        notice = (await asyncio.wait_for(proc.stderr.readline(), 20)).decode()
        job = notice.split()[-1]
        await wait_for_line(live_server, job, "start\n")
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 20) == 130
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert await stored(live_server, job) == "start\ngot INT\n", "one SIGINT, output kept"
    job_info = (await live_server.client().get(f"/api/v1/jobs/{job}")).json()
    assert job_info["status"] == "cancelled"


async def test_a_job_cancelled_elsewhere_stops_cmd(
    live_server: LiveServer, fifos: tuple[Fifo, Fifo], capsys: Capsys
) -> None:
    script = 'echo "$STREAMER_JOB_ID" > "$FROM"; while :; do echo tick; sleep 0.05; done'
    run = asyncio.create_task(cli(capsys, live_server, "run", "--quiet", *sh(script, fifos)))
    job = await fifos[0].receive()
    r = await live_server.client().patch(f"/api/v1/jobs/{job}", json={"status": "cancelled"})
    assert r.status_code == 200, r.text
    code, _, err = await run
    assert code == 1 and "cancelled" in err


async def test_echo_usage_missing_command_and_unreachable_server(
    live_server: LiveServer, capsys: Capsys, tmp_path: Path
) -> None:
    code, out, err = await cli(capsys, live_server, "run", "--", "sh", "-c", "echo o; echo e >&2")
    assert (code, out) == (0, "o\n") and "e\n" in err, "CMD's output is echoed by default"

    code, _, err = await cli(capsys, live_server, "run", "--", "/no/such/command")
    assert code == 127 and "cannot run" in err
    job = (await live_server.client().get("/api/v1/jobs")).json()["jobs"][0]
    assert job["status"] == "failed" and "cannot run" in await stored(live_server, job["id"])

    assert (await cli(capsys, live_server, "run"))[0] == 2
    assert (await cli(capsys, live_server, "run", "--name", "x", "--"))[0] == 2

    marker = tmp_path / "ran"
    dead = ["--url", "http://127.0.0.1:9", "--api-key", "k", "--retry-for", "0.3"]
    code, _, err = await run_main(capsys, "run", *dead, "--", "touch", str(marker))
    assert code == 3 and "gave up" in err and not marker.exists(), "no job, no CMD"


async def test_a_full_buffer_holds_the_producer_until_the_sender_takes() -> None:
    buffer = LineBuffer(10, max_events=2)
    assert await buffer.put(b"12345") and await buffer.put(b"67890")
    blocked = asyncio.create_task(buffer.put(b"abcde"))
    await asyncio.sleep(0)  # let it run up to its wait
    assert not blocked.done(), "over the limit: CMD's pipe is not read"
    assert await buffer.take(linger=5) == [b"12345", b"67890"], "a full batch goes at once"
    assert await asyncio.wait_for(blocked, 1) is True
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await buffer.take(linger=0.1) == [b"abcde"]
    assert 0.05 < loop.time() - start < 1, "a partial batch waits about the linger time"
    buffer.close()
    assert await buffer.take(linger=5) == []


async def test_a_second_ctrl_c_after_cmd_exited_stops_waiting_for_a_dead_server(
    live_server: LiveServer, fifos: tuple[Fifo, Fifo]
) -> None:
    script = 'echo start; read _ < "$TO"; echo end'
    argv = ["run", "--url", live_server.url, "--api-key", live_server.key, *sh(script, fifos)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamer",
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None

    async def stderr_until(text: str) -> None:
        assert proc.stderr is not None
        while text not in (await proc.stderr.readline()).decode():
            pass

    try:
        job = (await asyncio.wait_for(proc.stderr.readline(), 20)).decode().split()[-1]
        await wait_for_line(live_server, job, "start\n")
        await live_server.stop()
        fifos[1].send("go\n")  # CMD prints its last line and exits while the server is down
        await asyncio.wait_for(stderr_until("retrying"), 20)
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(stderr_until("interrupt again"), 20)
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 20) == 130
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
