"""``streamer serve`` as a real subprocess, for tests that kill or signal it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .live import free_socket

KEY_LINE = re.compile(r"export STREAMER_API_KEY=(stk_\w+)")
STREAMER = str(Path(sys.executable).with_name("streamer"))


def cli_user_key(db_url: str, name: str) -> str:
    """Create a user with ``streamer users create`` (a real process) and return its key."""
    created = subprocess.run(
        [STREAMER, "users", "create", "--db", db_url, "--name", name, "--email", f"{name}@x"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return created.stdout.strip().splitlines()[-1]


def wait_until_up(
    url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 30, status: int = 200
) -> None:
    """Poll ``url`` until it answers ``status`` (any status if 0); fail at once if the
    process dies, and after ``timeout`` seconds. Polling: a process has no event to await."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{what} exited with {proc.returncode}"
        try:
            answered = httpx.get(url, timeout=1).status_code
            if not status or answered == status:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not come up at {url}")


EXPORT_LINE = re.compile(r"^export (STREAMER_\w+)=(\S+)$", re.MULTILINE)


@dataclass
class ServerProcess:
    db: Path
    port: int = 0
    key: str = ""
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)  # extra STREAMER_* settings
    db_url: str = ""  # another database than the file ``db`` (PostgreSQL); logs stay by ``db``
    log: Path = field(init=False)
    # How to run it: this interpreter's package by default; an installed command
    # (a fresh venv's, the README's ``.venv/bin/streamer``) for the release tests.
    command: list[str] = field(default_factory=lambda: [sys.executable, "-m", "streamer"])
    cwd: Path | None = None
    flags: list[str] | None = None  # after ``serve``; None: --port and a quiet log

    def __post_init__(self) -> None:
        self.log = self.db.with_suffix(".log")
        if not self.port:
            with free_socket() as sock:
                self.port = sock.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> None:
        """Start and wait for /readyz; the first start records the printed admin key."""
        database = self.db_url or str(self.db)
        env = {**os.environ, **self.env, "STREAMER_DB": database, "PYTHONUNBUFFERED": "1"}
        flags = self.flags
        if flags is None:
            flags = ["--port", str(self.port), "--log-level", "warning"]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*self.command, "serve", *flags],
                env=env,
                stdout=out,
                stderr=out,
                cwd=self.cwd,
            )
        try:
            wait_until_up(f"{self.url}/readyz", self.proc, "streamer serve", timeout)
        except (AssertionError, TimeoutError) as exc:
            raise TimeoutError(f"{exc}:\n{self.log.read_text()}") from exc
        if not self.key:
            found = KEY_LINE.search(self.log.read_text())
            assert found, "first start must print the admin key"
            self.key = found.group(1)

    def exports(self) -> dict[str, str]:
        """The ``export STREAMER_...=`` lines ``serve`` printed for other terminals."""
        return dict(EXPORT_LINE.findall(self.log.read_text()))

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, exactly like a crash."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def terminate(self, timeout: float = 15) -> float:
        """SIGTERM and wait; returns how long the exit took."""
        assert self.proc is not None
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout)
        self.proc = None
        return time.monotonic() - began
