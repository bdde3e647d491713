"""Shared pieces of the benchmark suite: servers under test, /proc readings, stats, results.

Every server is a subprocess started on a free loopback port and stopped by its own
PID (``streamer serve`` with SIGTERM, nginx's master with SIGQUIT). Memory and CPU are
read from ``/proc`` for the server's process tree (nginx master + workers), so a
scenario can report server CPU next to the load generator's own.

``streamer serve`` runs on SQLite (a new file per server) or on PostgreSQL (a new
database per server, or per cluster of nodes, created on the server found at
``BENCH_PG`` / ``STREAMER_TEST_PG`` and dropped when the server stops).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results" / "results.jsonl"
# One API key drives every subscriber of a run: lift the per-user stream cap (a
# guard against abuse, not a cost), keep every other setting at its default.
BENCH_ENV = {"STREAMER_MAX_STREAMS_PER_USER": "100000", "STREAMER_APPEND_RATE": "0"}
KEY_LINE = re.compile(r"export STREAMER_API_KEY=(stk_\w+)")
# The PostgreSQL server the bench makes its databases on (the tests' variable, so one
# setting serves both); the user root is tried too when neither variable is set.
PG_URL = os.environ.get(
    "BENCH_PG", os.environ.get("STREAMER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
)
BACKENDS = ("sqlite", "postgres")
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------- results and stats


def git_rev() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        )
        rev = out.stdout.strip() or "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "streamer"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


@dataclass
class Recorder:
    """Appends one JSON line per scenario run to the results file and echoes it."""

    path: Path = RESULTS
    run_id: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"))
    rev: str = field(default_factory=git_rev)
    quick: bool = False
    records: list[dict[str, Any]] = field(default_factory=list)

    db: str = "sqlite"  # the backend of the streamer server(s) measured right now

    def write(self, scenario: str, **numbers: Any) -> dict[str, Any]:
        """One line; ``db`` names streamer's backend, ``None`` on lines of a peer only
        (Nchan, Redis, the raw sqlite3 / asyncpg ceilings), which have none."""
        server = numbers.get("server", "streamer")
        record: dict[str, Any] = {
            "rev": self.rev,
            "run": self.run_id,
            "ts": datetime.now(UTC).isoformat(timespec="seconds"),
            "scenario": scenario,
            "quick": self.quick,
            "db": self.db if server == "streamer" else None,
            "loadavg": round(os.getloadavg()[0], 2),
            **numbers,
        }
        self.records.append(record)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, separators=(",", ":"))
        with self.path.open("a") as out:
            out.write(line + "\n")
        print(line, flush=True)
        return record


def percentile(sorted_values: list[int] | list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 when empty)."""
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return float(sorted_values[k])


def latency_ms(values_ns: list[int]) -> dict[str, float]:
    """p50/p95/p99/max of nanosecond samples, in milliseconds."""
    values = sorted(values_ns)
    out = {f"p{p}_ms": round(percentile(values, p) / 1e6, 3) for p in (50, 95, 99)}
    out["max_ms"] = round(values[-1] / 1e6, 3) if values else 0.0
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def payload(seq: int, size: int = 100) -> str:
    """The event body: ``~<seq:010d> <monotonic ns:019d> xxx…`` padded to ``size``."""
    head = f"~{seq:010d} {time.monotonic_ns():019d} "
    return head + "x" * max(0, size - len(head))


# ---------------------------------------------------------------- /proc readings


def process_tree(pid: int) -> list[int]:
    """``pid`` and its direct children (nginx master + workers)."""
    pids = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                pids.append(int(entry.name))
    return pids


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / TICK


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


class RSSSampler:
    """Samples a process tree's RSS in a thread; ``peak`` is the highest seen."""

    def __init__(self, pids: list[int], interval: float = 0.05) -> None:
        self.pids = pids
        self.interval = interval
        self.start_rss = rss_bytes(pids)
        self.peak = self.start_rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes(self.pids))

    def __enter__(self) -> RSSSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes(self.pids))


# ---------------------------------------------------------------- PostgreSQL


def with_url_part(url: str, *, user: str | None = None, database: str | None = None) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if user is not None:
        netloc = f"{user}@{netloc.rpartition('@')[2]}"
    path = f"/{database}" if database is not None else parts.path
    return urlunsplit(parts._replace(netloc=netloc, path=path))


def _pg_run(url: str, sql: str) -> None:
    """One statement on ``url``, from any thread: scenarios call this while their own
    event loop runs, so it gets a loop of its own in a short-lived thread."""
    import asyncpg  # type: ignore[import-untyped]

    async def go() -> None:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    failure: list[BaseException] = []

    def work() -> None:
        try:
            asyncio.run(go())
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(60)
    if failure:
        raise failure[0]


def postgres_admin_url() -> tuple[str | None, str]:
    """(a URL that reaches the bench's PostgreSQL server, "") or (None, why not)."""
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        return None, "asyncpg is not installed (pip install -e '.[postgres]')"
    candidates = [PG_URL]
    if "BENCH_PG" not in os.environ and "STREAMER_TEST_PG" not in os.environ:
        candidates.append(with_url_part(PG_URL, user="root"))
    problems = []
    for url in candidates:
        try:
            _pg_run(url, "SELECT 1")
            return url, ""
        except Exception as exc:  # any failure means: not usable here
            problems.append(f"{url}: {exc}")
    return None, "PostgreSQL unreachable (set BENCH_PG): " + "; ".join(problems)


class PostgresDatabase:
    """A fresh, empty database ``streamer_bench_<random>``, dropped (``WITH (FORCE)``)
    by ``drop()``; the API key every server on it uses is made by the CLI."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.name = f"streamer_bench_{secrets.token_hex(6)}"
        self.url = with_url_part(admin_url, database=self.name)
        self.created = False

    def create(self) -> None:
        _pg_run(self.admin_url, f'CREATE DATABASE "{self.name}" TEMPLATE template0')
        self.created = True

    def drop(self) -> None:
        if self.created:
            _pg_run(self.admin_url, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            self.created = False

    def user_key(self, name: str = "bench") -> str:
        """``streamer users create`` against this database: its key is stdout's last line."""
        exe = Path(sys.executable).with_name("streamer")
        created = subprocess.run(
            [str(exe), "users", "create", "--db", self.url, "--name", name]
            + ["--email", f"{name}@bench.invalid"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return created.stdout.strip().splitlines()[-1]


# ---------------------------------------------------------------- servers under test


@dataclass
class Target:
    """How the load generator talks to one server: paths and headers per transport."""

    name: str
    port: int
    headers: dict[str, str]

    def sub_path(self, channel: str, transport: str, from_index: int = 0) -> str:
        raise NotImplementedError

    def pub_path(self, channel: str) -> str:
        raise NotImplementedError

    def pub_body(self, data: str) -> bytes:
        raise NotImplementedError


class StreamerTarget(Target):
    def sub_path(self, channel: str, transport: str, from_index: int = 0) -> str:
        kind = "stream" if transport == "sse" else "ws"
        return f"/api/v1/jobs/{channel}/events/{kind}?from_index={from_index}"

    def pub_path(self, channel: str) -> str:
        return f"/api/v1/jobs/{channel}/events"

    def pub_body(self, data: str) -> bytes:
        return b'{"data":"%s"}' % data.encode()


class NchanTarget(Target):
    def sub_path(self, channel: str, transport: str, from_index: int = 0) -> str:
        return f"/sub/{channel}"

    def pub_path(self, channel: str) -> str:
        return f"/pub/{channel}"

    def pub_body(self, data: str) -> bytes:
        return data.encode()


class Server:
    name = "server"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def pids(self) -> list[int]:
        return [self.pid]

    def cpu(self) -> float:
        return cpu_seconds(self.pids())

    def rss(self) -> int:
        return rss_bytes(self.pids())

    def target(self) -> Target:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_ready(self, path: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_tail()}")
            try:
                if httpx.get(self.url + path, timeout=1).status_code < 500:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise TimeoutError(f"{self.name} did not become ready: {self.log_tail()}")

    def log_tail(self) -> str:
        return ""

    def terminate(self) -> None:
        """SIGTERM to the process, SIGKILL if it has not exited 20 s later."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


class StreamerServer(Server):
    """``streamer serve`` (access log off) on SQLite in a temporary directory, or on
    PostgreSQL: a database of its own (``pg_admin``), or a shared one (``pg_db``, a
    node of a cluster; whoever made it drops it)."""

    name = "streamer"

    def __init__(
        self,
        workdir: Path,
        env: dict[str, str] | None = None,
        *,
        pg_admin: str | None = None,
        pg_db: PostgresDatabase | None = None,
        key: str = "",
        fd_limit: int | None = None,
        exe: Path | None = None,
    ) -> None:
        super().__init__(workdir)
        self.fd_limit = fd_limit  # RLIMIT_NOFILE (soft and hard) for the server process
        self.exe = exe or Path(sys.executable).with_name("streamer")
        self.pg = pg_db
        self.own_pg = pg_db is None and pg_admin is not None
        if self.own_pg:
            assert pg_admin is not None
            self.pg = PostgresDatabase(pg_admin)
        self.db = self.pg.url if self.pg else str(workdir / f"streamer-{self.port}.db")
        self.log = workdir / f"streamer-{self.port}.log"
        self.env = env or {}
        self.key = key
        self.client: httpx.Client | None = None

    @property
    def backend(self) -> str:
        return "postgres" if self.pg else "sqlite"

    def start(self) -> None:
        if self.pg is not None and self.own_pg:
            self.pg.create()
        if self.pg is not None and not self.key:
            # A first start prints an admin key only on an empty database; a cluster's
            # second node would not, so on PostgreSQL the key always comes from the CLI.
            self.key = self.pg.user_key()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **BENCH_ENV, **self.env}
        for name in ("STREAMER_DB", "STREAMER_URL", "STREAMER_API_KEY"):
            env.pop(name, None)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(self.exe), "serve", "--db", self.db, "--port", str(self.port)]
                + ["--log-level", "warning"],
                env=env,
                stdout=out,
                stderr=out,
                cwd=self.workdir,
                preexec_fn=self._limit_fds if self.fd_limit else None,  # noqa: PLW1509
            )
        self._wait_ready("/readyz")
        if not self.key:
            found = KEY_LINE.search(self.log.read_text())
            if not found:
                raise RuntimeError(f"no API key printed: {self.log_tail()}")
            self.key = found.group(1)
        self.client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=60
        )

    def _limit_fds(self) -> None:
        """In the child, before exec: a descriptor limit the server cannot raise."""
        assert self.fd_limit is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.fd_limit, self.fd_limit))

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        self.terminate()
        if self.pg is not None and self.own_pg:
            self.pg.drop()

    def log_tail(self) -> str:
        try:
            return self.log.read_text()[-2000:]
        except OSError:
            return ""

    def target(self) -> Target:
        return StreamerTarget("streamer", self.port, {"Authorization": f"Bearer {self.key}"})

    def create_job(self, name: str = "bench") -> str:
        assert self.client is not None
        response = self.client.post("/api/v1/jobs", json={"name": name})
        response.raise_for_status()
        job_id: str = response.json()["id"]
        return job_id

    def append(self, job_id: str, events: list[dict[str, Any]]) -> None:
        assert self.client is not None
        self.client.post(
            f"/api/v1/jobs/{job_id}/events", json={"events": events}
        ).raise_for_status()

    def event_count(self, job_id: str) -> int:
        assert self.client is not None
        count: int = self.client.get(f"/api/v1/jobs/{job_id}").json()["event_count"]
        return count

    def metrics(self) -> dict[str, float]:
        """``/metrics`` as {name{labels}: value}."""
        text = httpx.get(self.url + "/metrics", timeout=5).text
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out


NCHAN_MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")


def nchan_available() -> bool:
    return shutil.which("nginx") is not None and NCHAN_MODULE.exists()


class NchanServer(Server):
    """nginx + Nchan from ``bench/nchan.conf``: one worker, a 1,000,000-message buffer."""

    name = "nchan"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.prefix = Path(tempfile.mkdtemp(prefix=f"nchan-{self.port}-", dir=workdir))
        self.conf = self.prefix / "nginx.conf"

    def start(self) -> None:
        nginx = shutil.which("nginx")
        if nginx is None or not NCHAN_MODULE.exists():
            raise RuntimeError("nginx with libnginx-mod-nchan is not installed")
        template = (BENCH / "nchan.conf").read_text()
        self.conf.write_text(
            template.replace("@MODULE@", str(NCHAN_MODULE))
            .replace("@PREFIX@", str(self.prefix))
            .replace("@PORT@", str(self.port))
        )
        (self.prefix / "logs").mkdir(exist_ok=True)
        self.proc = subprocess.Popen(
            [nginx, "-p", str(self.prefix), "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=(self.prefix / "logs" / "stderr.log").open("ab"),
        )
        self._wait_ready("/healthz")
        time.sleep(0.1)  # the worker is forked right after the master binds

    def pids(self) -> list[int]:
        return process_tree(self.pid)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # nginx: graceful stop of master + workers
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(10)
        self.proc = None

    def log_tail(self) -> str:
        try:
            return (self.prefix / "logs" / "error.log").read_text()[-2000:]
        except OSError:
            return ""

    def target(self) -> Target:
        return NchanTarget("nchan", self.port, {})

    def messages(self, channel: str) -> int:
        """Messages Nchan holds for a channel (its channel-info answer to a GET on /pub)."""
        response = httpx.get(
            f"{self.url}/pub/{channel}", headers={"Accept": "application/json"}, timeout=10
        )
        if response.status_code == 404:
            return 0
        count: int = response.json()["messages"]
        return count


# ---------------------------------------------------------------- one suite run


@dataclass
class Suite:
    """What every scenario gets: where to write, how big, which peers, which backend.

    ``db`` is streamer's backend for this pass; ``peers`` is False on the passes
    after the first, so Nchan, Redis and the sqlite3 ceiling run once per scenario
    whatever the number of backends.
    """

    recorder: Recorder
    workdir: Path
    quick: bool = False
    nchan: bool = True
    redis_url: str = "redis://127.0.0.1:6379/0"
    db: str = "sqlite"
    pg_admin: str | None = None  # set when PostgreSQL is reachable
    peers: bool = True
    shared: dict[str, Any] = field(default_factory=dict)  # peers' numbers, across passes

    def servers(self) -> list[str]:
        return ["streamer", "nchan"] if self.nchan and self.peers else ["streamer"]

    def server(self, name: str, env: dict[str, str] | None = None) -> Server:
        if name == "nchan":
            return NchanServer(self.workdir)
        if self.db == "postgres":
            assert self.pg_admin is not None
            return StreamerServer(self.workdir, env, pg_admin=self.pg_admin)
        return StreamerServer(self.workdir, env)


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None
