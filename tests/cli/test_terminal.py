"""Remote log text cannot drive the local terminal; colour survives only where it belongs."""

from __future__ import annotations

import asyncio
import io
import os
import pty
import select
import sys
from dataclasses import dataclass

import pytest

from streamer.cli.terminal import LogPrinter, json_safe, sanitize, use_color

from ..support.live import LiveServer

HOSTILE = (
    "\x1b[31mred\x1b[0m plain\n"
    "\x1b[2J\x1b[Hclear screen\n"
    "\x1b]0;pwned\x07title\n"
    "\x1b[5Aup five\n"
    "progress 10%\rprogress 20%\n"
    "bell\x07 c1\x9b2J done\r\n"
)


def test_sgr_passes_with_colour_and_every_other_control_is_escaped() -> None:
    text = sanitize(HOSTILE, color=True)
    assert "\x1b[31mred\x1b[0m plain\n" in text
    assert "\\x1b[2J\\x1b[Hclear screen\n" in text
    assert "\\x1b]0;pwned\\x07title\n" in text
    assert "\\x1b[5Aup five\n" in text
    assert "progress 10%\\rprogress 20%\n" in text, "a lone CR could overwrite a line"
    assert "bell\\x07 c1\\x9b2J done\r\n" in text, "CRLF stays, C1 CSI is escaped"
    leftover = text.replace("\x1b[31m", "").replace("\x1b[0m", "")
    assert not any(ord(c) < 32 and c not in "\n\r" or 0x7F <= ord(c) <= 0x9F for c in leftover)


def test_without_colour_sgr_is_removed_and_the_rest_still_escaped() -> None:
    text = sanitize(HOSTILE, color=False)
    assert text.startswith("red plain\n")
    assert "\x1b" not in text and "\\x1b[2J" in text
    assert sanitize("grep \x1b[01;31m\x1b[Kmatch\x1b[m\x1b[K\n", color=False) == "grep match\n"


def test_tabs_newlines_and_unicode_are_untouched() -> None:
    text = "a\tb\nünïcödé ✓ \u2028 end\n"
    assert sanitize(text, color=False) == text


def test_json_lines_escape_c1_controls_and_keep_their_value() -> None:
    line = '{"data":"x\x9by\u2028"}'
    safe = json_safe(line)
    assert "\x9b" not in safe and "\\u009b" in safe and "\\u2028" in safe
    import json

    assert json.loads(safe) == json.loads(line)


def test_colour_auto_follows_the_terminal_and_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_color("auto", Tty()) and not use_color("auto", io.StringIO())
    assert use_color("always", io.StringIO()) and not use_color("never", Tty())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_color("auto", Tty())


@dataclass
class FakeEvent:
    data: str | None
    timestamp: str
    line: bytes = b"{}"


def test_timestamps_prefix_each_line_once_even_across_partial_events() -> None:
    out = io.StringIO()
    printer = LogPrinter(out, color=False, timestamps=True)
    printer.write([FakeEvent("a\nb\n", "T1"), FakeEvent("par", "T2"), FakeEvent("tial\n\nc", "T3")])
    printer.write([FakeEvent(None, "T4"), FakeEvent("\n", "T5")])
    assert out.getvalue() == "T1 a\nT1 b\nT2 partial\nT3 \nT3 c\n"


def test_printer_resets_colour_left_on_by_the_log() -> None:
    out = io.StringIO()
    printer = LogPrinter(out, color=True)
    printer.write([FakeEvent("\x1b[32mgreen without reset\n", "T")])
    printer.close()
    assert out.getvalue().endswith("\x1b[0m")


def _read_pty(fd: int, timeout: float) -> bytes:
    """Everything the child writes to the terminal, until it closes it (EIO on Linux)."""
    chunks: list[bytes] = []
    while True:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            raise TimeoutError(f"no output for {timeout}s; got {b''.join(chunks)!r}")
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_on_a_terminal_line_edits_pass_and_nothing_else_does() -> None:
    """Progress bars' controls reach a terminal (which then shows each line's last
    state, as the producer's did); cursor moves between lines, OSC and C1 do not."""
    bar = "10%\r20%\x08\x08\x1b[K30%\x1b[1G40%\x1b[2C\x1b[3D\n"
    assert sanitize(bar, color=False, terminal=True) == bar
    assert sanitize(bar, color=False) == "10%\\r20%\\x08\\x0830%\\x1b[1G40%\\x1b[2C\\x1b[3D\n"
    text = sanitize(HOSTILE, color=True, terminal=True)
    assert "progress 10%\rprogress 20%\n" in text
    assert "\\x1b[2J\\x1b[H" in text and "\\x1b[5A" in text and "\\x1b]0;" in text
    assert "\\x9b" in text and "bell\\x07" in text


def test_timestamps_on_a_terminal_survive_carriage_returns() -> None:
    """A lone CR goes back over the stamp, so what follows is stamped again; a CR that
    ends one event before the next one's LF is a CRLF, not a new line."""
    out = io.StringIO()
    printer = LogPrinter(out, color=False, timestamps=True, terminal=True)
    printer.write([FakeEvent("10%\r", "T1"), FakeEvent("50%\r100%\n", "T2")])
    printer.write([FakeEvent("dos\r", "T3"), FakeEvent("\nnext\n", "T4")])
    assert out.getvalue() == "T1 10%\rT2 50%\rT2 100%\nT3 dos\r\nT4 next\n"
    piped = io.StringIO()
    LogPrinter(piped, color=False, timestamps=True).write([FakeEvent("10%\r20%\n", "T")])
    assert piped.getvalue() == "T 10%\\r20%\n"


async def test_follow_on_a_pseudo_terminal_keeps_sgr_and_escapes_the_rest(
    live_server: LiveServer,
) -> None:
    """The real command on a real (pseudo) terminal: colour shows, nothing else acts."""
    client = live_server.client()
    job = await live_server.create_job(name="hostile")
    events = [{"data": line} for line in HOSTILE.splitlines(keepends=True)]
    r = await client.post(
        f"/api/v1/jobs/{job}/events",
        json={"events": [*events, {"type": "complete", "success": True}]},
    )
    assert r.status_code == 201, r.text
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamer",
        "follow",
        job,
        "--url",
        live_server.url,
        "--api-key",
        live_server.key,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=slave,
        stderr=asyncio.subprocess.PIPE,
        env={**env, "TERM": "xterm-256color"},
    )
    os.close(slave)
    try:
        raw = await asyncio.to_thread(_read_pty, master, 20)
        code = await asyncio.wait_for(proc.wait(), 20)
    finally:
        os.close(master)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    out = raw.replace(b"\r\n", b"\n")  # the terminal's own ONLCR translation
    assert code == 0, await proc.stderr.read() if proc.stderr else b""
    assert b"\x1b[31mred\x1b[0m plain\n" in out
    assert b"\\x1b[2J\\x1b[Hclear screen\n" in out
    assert b"\\x1b]0;pwned\\x07title\n" in out
    assert b"\\x1b[5Aup five\n" in out
    assert b"progress 10%\rprogress 20%\n" in out, "a terminal shows the line's last state"
    assert b"\x1b[2J" not in out and b"\x1b]" not in out and b"\x1b[5A" not in out
