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

from .conftest import free_socket

KEY_LINE = re.compile(r"export STREAMER_API_KEY=(stk_\w+)")


@dataclass
class ServerProcess:
    db: Path
    port: int = 0
    key: str = ""
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)  # extra STREAMER_* settings
    log: Path = field(init=False)

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
        env = {**os.environ, **self.env, "STREAMER_DB": str(self.db), "PYTHONUNBUFFERED": "1"}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "streamer",
                    "serve",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "warning",
                ],
                env=env,
                stdout=out,
                stderr=out,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            raise TimeoutError(f"server did not become ready:\n{self.log.read_text()}")
        if not self.key:
            found = KEY_LINE.search(self.log.read_text())
            assert found, "first start must print the admin key"
            self.key = found.group(1)

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
