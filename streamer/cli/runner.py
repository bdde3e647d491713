"""``streamer run -- CMD``: run a command and stream its output into a new job.

The order is the contract: create the job, mark it running, start CMD, stream its
stdout and stderr (read concurrently, appended in arrival order), then append the
``complete`` event with CMD's result — after every line before it is stored — and
exit with CMD's status. CMD learns its job from ``STREAMER_JOB_ID``.

CMD runs in its own process group. A terminal's Ctrl-C then reaches only this
process, which forwards it (and SIGTERM, SIGHUP) to CMD's group exactly once, waits
for CMD to finish, stores what it printed while stopping, and marks the job
cancelled; a third one sends SIGKILL, and once CMD has exited a second one stops
waiting for a server that is away. In the same group CMD would get the terminal's
SIGINT and a forwarded one: two interrupts, which many programs read as "force
quit". The price: CMD is not in the terminal's foreground group, so it gets no
terminal stdin (it would stop on SIGTTIN); stdin is passed through when it is not
a terminal.

If the server stays away longer than the retry budget, or refuses (the key was
revoked, the job deleted), CMD keeps running and the rest of its output is only
printed locally; the exit status is then 3. If the job is cancelled by someone else,
CMD gets SIGTERM and the exit status is 1.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable
from typing import BinaryIO

from . import exits
from .client import Client, ClientError
from .terminal import program
from .upload import JobClosed, LineBuffer, Uploader, decode_data, encode_log

CHUNK = 64 * 1024
MAX_PIECE = 64 * 1024  # characters; a longer line is sent in pieces, well under the limits
LINGER = 0.1
BUFFER_BYTES = 8 * 1024 * 1024
EXIT_GRACE = 2.0  # after CMD exits, how long its pipes may stay open (background children)
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Runner:
    def __init__(
        self,
        client: Client,
        argv: list[str],
        *,
        name: str | None = None,
        quiet: bool = False,
        notice: Callable[[str], None],
        buffer_bytes: int = BUFFER_BYTES,
        batch_events: int = 5000,
        linger: float = LINGER,
    ) -> None:
        self.client = client
        self.argv = argv
        self.name = name or shlex.join(argv)[:200]
        self.quiet = quiet
        self.notice = notice
        self.linger = linger
        self.buffer = LineBuffer(buffer_bytes, max_events=batch_events)
        self.proc: asyncio.subprocess.Process | None = None
        self.transport: asyncio.SubprocessTransport | None = None
        self.exited: asyncio.Future[None] | None = None
        self.interrupted: int | None = None
        self.signals = 0
        self.failure: ClientError | None = None
        self.task: asyncio.Task[int] | None = None

    async def run(self) -> int:
        response = await self.client.request(
            "POST", "/jobs", json={"name": self.name}, idempotent=False
        )
        job_id: str = response.json()["id"]
        url = self.client.settings.url
        self.notice(f"job {job_id}; follow it with: {program()} follow {job_id}")
        job = (
            await self.client.request("PATCH", f"/jobs/{job_id}", json={"status": "running"})
        ).json()
        uploader = Uploader(self.client, job_id, int(job["next_index"]))
        try:
            proc, transport, exited = await _spawn(
                self.argv, {**os.environ, "STREAMER_JOB_ID": job_id, "STREAMER_URL": url}
            )
        except OSError as exc:
            message = f"streamer: cannot run {self.argv[0]!r}: {exc.strerror or exc}\n"
            self.notice(message.removeprefix("streamer: ").rstrip())
            await uploader.append([encode_log(message)])
            await uploader.complete(False)
            return 127 if isinstance(exc, FileNotFoundError) else 126
        self.proc, self.transport, self.exited = proc, transport, exited
        self.task = asyncio.current_task()
        handled = self._install_signals()
        try:
            code = await self._supervise(uploader)
            return await self._finish(uploader, job_id, code)
        except asyncio.CancelledError:
            if self.interrupted is None:
                raise
            self.notice("interrupted again: stopped without storing the rest")
            return 128 + self.interrupted
        finally:
            self._remove_signals(handled)
            transport.close()  # kills CMD if it still runs; never waits on its pipes

    async def _supervise(self, uploader: Uploader) -> int:
        """Stream CMD's output until it exits and its pipes close; return its exit status."""
        proc = self.proc
        assert proc is not None and proc.stdout is not None and proc.stderr is not None
        out, err = (None, None) if self.quiet else (_binary(sys.stdout), _binary(sys.stderr))
        pumps = [
            asyncio.create_task(self._pump(proc.stdout, out)),
            asyncio.create_task(self._pump(proc.stderr, err)),
        ]
        sender = asyncio.create_task(self._send(uploader))
        try:
            assert self.exited is not None and self.transport is not None
            await self.exited
            _, pending = await asyncio.wait(pumps, timeout=EXIT_GRACE)
            if pending:  # a background child of CMD still holds a pipe open
                self.notice(f"{self.argv[0]} exited; no longer reading what its children print")
                self.transport.close()  # the readers see end of file
            for task in pumps:
                await task
            code = await proc.wait()
            self.buffer.close()
            await sender
        finally:
            for task in (*pumps, sender):
                task.cancel()
        return code

    async def _pump(self, stream: asyncio.StreamReader, echo: BinaryIO | None) -> None:
        """Lines of one pipe into the buffer; a partial line goes out after ``linger``."""
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        pending = b""
        while True:
            try:
                async with asyncio.timeout(self.linger if pending else None):
                    chunk = await stream.read(CHUNK)
            except TimeoutError:
                await self._emit(decoder.decode(pending))
                pending = b""
                continue
            if not chunk:
                break
            if echo is not None:
                echo.write(chunk)
                echo.flush()
            pending += chunk
            cut = pending.rfind(b"\n") + 1
            if cut:
                await self._emit(decoder.decode(pending[:cut]))
                pending = pending[cut:]
            while len(pending) >= MAX_PIECE:
                await self._emit(decoder.decode(pending[:MAX_PIECE]))
                pending = pending[MAX_PIECE:]
        await self._emit(decoder.decode(pending, final=True))

    async def _emit(self, text: str) -> None:
        if not text:
            return
        lines = text.split("\n")
        last = lines.pop()
        for line in lines:
            await self._put(line + "\n")
        if last:
            await self._put(last)

    async def _put(self, text: str) -> None:
        for start in range(0, len(text), MAX_PIECE):
            piece = text[start : start + MAX_PIECE]
            if not await self.buffer.put(encode_log(piece)):
                self._lost([piece])

    def _lost(self, texts: list[str]) -> None:
        """Output the server will never have: already echoed, or printed here now."""
        if self.quiet:
            sys.stderr.write("".join(texts))
            sys.stderr.flush()

    async def _send(self, uploader: Uploader) -> None:
        batch: list[bytes] = []
        try:
            while batch := await self.buffer.take(self.linger):
                await uploader.append(batch)
        except ClientError as exc:
            self.failure = exc
            if isinstance(exc, JobClosed):
                self.notice(f"{exc.message}; stopping {self.argv[0]}")
                self._signal(signal.SIGTERM)
            else:
                self.notice(f"{exc.message}; the rest of the output is not stored")
            self._lost([decode_data(item) for item in batch + self.buffer.drop()])

    async def _finish(self, uploader: Uploader, job_id: str, code: int) -> int:
        status = 128 - code if code < 0 else code
        if isinstance(self.failure, JobClosed):
            return exits.FAILED
        if self.failure is not None:
            return exits.UNREACHABLE
        try:
            if self.interrupted is not None:
                await self.client.request(
                    "PATCH",
                    f"/jobs/{job_id}",
                    json={"status": "cancelled"},
                    accept=frozenset({409}),
                )
                self.notice(f"job {job_id} cancelled")
                return 128 + self.interrupted
            await uploader.complete(code == 0)
        except ClientError as exc:
            self.notice(f"cannot complete job {job_id}: {exc.message}")
            return exits.UNREACHABLE
        return status

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass  # it has just exited; proc.wait() will say how

    def _forward(self, sig: int) -> None:
        """Ctrl-C and friends: pass them on once each; a third one kills.

        Once CMD has exited, a second one stops waiting for the server too.
        """
        self.interrupted = self.interrupted or sig
        self.signals += 1
        assert self.proc is not None
        if self.proc.returncode is None:
            self._signal(signal.SIGKILL if self.signals >= 3 else sig)
        elif self.signals == 1:
            self.notice("interrupted: storing the rest of the log; interrupt again to stop waiting")
        elif self.task is not None:
            self.task.cancel()

    def _install_signals(self) -> list[int]:
        if threading.current_thread() is not threading.main_thread():
            return []  # only the main thread may own signals (tests run main() in threads)
        loop = asyncio.get_running_loop()
        for sig in FORWARDED:
            loop.add_signal_handler(sig, self._forward, sig)
        return list(FORWARDED)

    def _remove_signals(self, handled: list[int]) -> None:
        loop = asyncio.get_running_loop()
        for sig in handled:
            loop.remove_signal_handler(sig)


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Says when the process exits, which ``Process.wait()`` only does once the pipes close."""

    def __init__(self, exited: asyncio.Future[None]) -> None:
        super().__init__(limit=CHUNK, loop=exited.get_loop())
        self.exited = exited

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


async def _spawn(
    argv: list[str], env: dict[str, str]
) -> tuple[asyncio.subprocess.Process, asyncio.SubprocessTransport, asyncio.Future[None]]:
    """CMD in its own process group, stdout and stderr piped (see the module docstring)."""
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()
    transport, protocol = await loop.subprocess_exec(
        lambda: _Protocol(exited),
        *argv,
        stdin=asyncio.subprocess.DEVNULL if os.isatty(0) else None,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        process_group=0,
        env=env,
    )
    return asyncio.subprocess.Process(transport, protocol, loop), transport, exited


def _binary(stream: object) -> BinaryIO | None:
    """The byte stream under a text stream, flushed first so nothing is reordered."""
    buffer = getattr(stream, "buffer", None)
    flush = getattr(stream, "flush", None)
    if callable(flush):
        flush()
    return buffer if buffer is not None else None
