"""A release a user installs without cloning: the wheel in a fresh venv, and the image.

The wheel is built as a release builds it (``pip wheel``, from a copy of the sources,
so the worktree gets no ``build/`` or ``egg-info``), installed into a new virtual
environment (its dependencies from the package index, as a user gets them; pip's
cache keeps that quick), and then only what that venv installed is used:
``streamer --version``, ``streamer serve`` on a free loopback port with a temporary
database, a job created, appended to and read back over HTTP and with the installed
``streamer follow``, the dashboard served from the wheel's files; then SIGTERM, by PID.

The Docker image is built and run the same way where a Docker engine answers;
elsewhere that test reports itself skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import httpx
import pytest

from ..support import REPO
from ..support.live import free_socket
from ..support.procs import ServerProcess, wait_until_up

SOURCES = ("pyproject.toml", "README.md")
STATIC = REPO / "streamer" / "static"


def run(*argv: str | Path, timeout: float, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )
    assert done.returncode == 0, f"{argv}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def build_wheel(tmp: Path) -> Path:
    source = tmp / "source"
    shutil.copytree(
        REPO / "streamer",
        source / "streamer",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    for name in SOURCES:
        shutil.copy(REPO / name, source / name)
    dist = tmp / "dist"
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, source, timeout=180)
    (wheel,) = dist.glob("streamer-*.whl")
    return wheel


def check_contents(wheel: Path) -> None:
    """The dashboard's files, the console script and the PostgreSQL driver are in it."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        scripts = archive.read(entry_points).decode()
        requires = archive.read(metadata).decode()
    static = {
        "streamer/static/" + p.relative_to(STATIC).as_posix()
        for p in STATIC.rglob("*")
        if p.is_file()
    }
    assert static and static <= names, f"missing from the wheel: {sorted(static - names)}"
    assert "streamer = streamer.cli.main:run" in scripts
    assert "Requires-Dist: asyncpg" in requires, "PostgreSQL works from the default install"
    assert not any(n.startswith(("tests/", "bench/")) for n in names)


def smoke(url: str, key: str, streamer: Path) -> None:
    """A job created, appended to and read back; the installed CLI follows it."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http:
        r = http.post("/api/v1/jobs", json={"name": "release smoke"})
        assert r.status_code == 201, r.text
        job = r.json()["id"]
        events = [{"data": "hello from the wheel\n"}, {"type": "complete", "success": True}]
        r = http.post(f"/api/v1/jobs/{job}/events", json={"events": events})
        assert r.status_code == 201, r.text
        assert http.get(f"/api/v1/jobs/{job}/log").text == "hello from the wheel\n"
        page = httpx.get(f"{url}/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert httpx.get(f"{url}/app.js").status_code == 200, "the dashboard ships in the wheel"
    out = run(streamer, "follow", job, "--url", url, "--api-key", key, timeout=60)
    assert out == "hello from the wheel\n"


def test_the_built_wheel_installs_and_serves_from_a_fresh_venv(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    check_contents(wheel)
    venv = tmp_path / "fresh"
    run(sys.executable, "-m", "venv", venv, timeout=120)
    run(venv / "bin" / "pip", "install", "-q", wheel, timeout=600, cwd=tmp_path)
    streamer = venv / "bin" / "streamer"
    release = wheel.name.split("-")[1]
    assert run(streamer, "--version", timeout=60, cwd=tmp_path) == f"streamer {release}\n"

    server = ServerProcess(tmp_path / "release.db", command=[str(streamer)], cwd=tmp_path)
    server.start(timeout=60)
    proc = server.proc
    assert proc is not None
    try:
        assert server.exports() == {"STREAMER_URL": server.url, "STREAMER_API_KEY": server.key}
        smoke(server.url, server.key, streamer)
    finally:
        if server.proc is not None:
            server.terminate()
    # uvicorn re-raises SIGTERM once it has shut down: "killed by SIGTERM" is its clean
    # exit (systemd counts it as success), so no traceback is the test.
    assert proc.returncode in (0, -signal.SIGTERM), server.log.read_text()
    assert "Traceback" not in server.log.read_text()


def docker_unavailable() -> str | None:
    """Why the image cannot be built here, or None when a Docker engine answers."""
    if shutil.which("docker") is None:
        return "no docker command"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        lines = (info.stderr or info.stdout).strip().splitlines()
        return f"docker info failed: {lines[-1] if lines else info.returncode}"
    return None


def test_the_docker_image_runs_streamer_serve_on_a_volume(tmp_path: Path) -> None:
    reason = docker_unavailable()
    if reason is not None:
        pytest.skip(f"no Docker engine to build the image with ({reason})")
    tag = f"streamer-test:{uuid.uuid4().hex[:12]}"
    name = tag.replace(":", "-")
    with free_socket() as sock:
        port = sock.getsockname()[1]
    run("docker", "build", "-q", "-t", tag, REPO, timeout=900)
    try:
        run(
            "docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000",
            "-v", f"{name}:/data", tag, timeout=120,
        )  # fmt: skip
        # `docker logs -f` ends when the container does: what wait_until_up watches.
        logs = subprocess.Popen(
            ["docker", "logs", "-f", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_up(f"{url}/readyz", logs, "the container", timeout=120)
            done = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
            printed = done.stdout + done.stderr  # serve prints its exports on stderr
            key = next(
                line.split("=", 1)[1]
                for line in printed.splitlines()
                if line.startswith("export STREAMER_API_KEY=")
            )
            smoke(url, key, Path(sys.executable).with_name("streamer"))
            run("docker", "stop", "-t", "30", name, timeout=90)
            state = run("docker", "inspect", "-f", "{{.State.ExitCode}}", name, timeout=60)
            assert state.strip() in ("0", "143"), "SIGTERM ends it cleanly"
        finally:
            logs.kill()
            logs.wait(10)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=120)
        subprocess.run(["docker", "volume", "rm", "-f", name], capture_output=True, timeout=120)
        subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True, timeout=120)


def test_the_systemd_unit_is_valid_and_runs_the_installed_command(tmp_path: Path) -> None:
    """``systemd-analyze verify`` on deploy/streamer.service, pointed at a real command."""
    unit = (REPO / "deploy" / "streamer.service").read_text()
    assert "ExecStart=/opt/streamer/bin/streamer serve" in unit
    if shutil.which("systemd-analyze") is None:
        pytest.skip("no systemd-analyze to verify the unit with")
    installed = Path(sys.executable).with_name("streamer")
    local = tmp_path / "streamer.service"
    local.write_text(unit.replace("/opt/streamer/bin/streamer", str(installed)))
    env = {**os.environ, "SYSTEMD_LOG_LEVEL": "warning"}
    done = subprocess.run(
        ["systemd-analyze", "verify", str(local)], capture_output=True, text=True, env=env,
        timeout=60,
    )  # fmt: skip
    complaints = [line for line in done.stderr.splitlines() if str(local) in line]
    assert done.returncode == 0 and not complaints, done.stderr
