"""Two real ``streamer serve`` processes on one fresh PostgreSQL database: a cluster.

``two_nodes()`` creates the database, a first user with the CLI, starts both nodes
and waits for them; on the way out it stops them and drops the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from .postgres import pg_admin, pg_admin_url, with_url_part
from .procs import STREAMER, cli_user_key, wait_until_up

READY_SECONDS = 30.0


@dataclass
class Node:
    process: subprocess.Popen[bytes]
    url: str
    log: Path


@dataclass
class Cluster:
    db_url: str
    db_name: str
    key: str
    a: Node
    b: Node

    def client(self, node: Node) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=node.url,
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=httpx.Timeout(30.0),
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_node(db_url: str, log: Path, env: dict[str, str] | None = None) -> Node:
    port = free_port()
    env = {**os.environ, **(env or {}), "STREAMER_DB": db_url}
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - our own console script
            [STREAMER, "serve", "--db", db_url, "--port", str(port), "--log-level", "warning"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    return Node(process, f"http://127.0.0.1:{port}", log)


def wait_ready(node: Node) -> None:
    """Until ``/readyz`` answers 200; fail with the node's log if it dies or never does."""
    try:
        wait_until_up(f"{node.url}/readyz", node.process, "node", READY_SECONDS)
    except (AssertionError, TimeoutError) as exc:
        pytest.fail(f"{exc}:\n{node.log.read_text()}")


def stop(node: Node) -> None:
    if node.process.poll() is None:
        node.process.terminate()
        try:
            node.process.wait(10)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait(10)


@contextlib.contextmanager
def two_nodes(logs: Path, env: dict[str, str] | None = None) -> Iterator[Cluster]:
    """A fresh database, a first user made by the CLI, and two nodes on it (``env``:
    extra ``STREAMER_*`` settings for both)."""
    admin = asyncio.run(pg_admin_url())
    name = f"streamer_test_{os.urandom(6).hex()}"
    asyncio.run(pg_admin(f'CREATE DATABASE "{name}" TEMPLATE template0'))
    db_url = with_url_part(admin, database=name)
    nodes: list[Node] = []
    try:
        key = cli_user_key(db_url, "x")
        nodes = [start_node(db_url, logs / "a.log", env), start_node(db_url, logs / "b.log", env)]
        for node in nodes:
            wait_ready(node)
        yield Cluster(db_url, name, key, nodes[0], nodes[1])
    finally:
        for node in nodes:
            stop(node)
        asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
