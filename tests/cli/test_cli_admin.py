"""`streamer users` and `streamer keys`: keys shown once, revocation takes effect."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from streamer.cli.main import main

from ..support.procs import ServerProcess


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_users_create_prints_the_key_alone_on_the_last_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "a.db")
    code, out, _ = run(capsys, "users", "create", "--name", "Ada", "--email", "ada@x", "--db", db)
    assert code == 0
    key = out.rstrip("\n").splitlines()[-1]
    assert key.startswith("stk_") and " " not in key
    code, _, err = run(capsys, "users", "create", "--name", "Ada", "--email", "ada@x", "--db", db)
    assert code == 2 and "already exists" in err
    assert key.encode() not in (tmp_path / "a.db").read_bytes(), "only the hash is stored"


def test_keys_create_list_and_revoke_over_a_running_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = ServerProcess(tmp_path / "k.db")
    server.start()
    db = str(server.db)
    try:
        code, out, _ = run(
            capsys, "keys", "create", "--email", "admin@localhost", "--name", "ci", "--db", db
        )
        assert code == 0
        second = out.splitlines()[-1]
        jobs = f"{server.url}/api/v1/jobs"
        assert httpx.get(jobs, headers={"Authorization": f"Bearer {second}"}).status_code == 200

        code, out, _ = run(
            capsys, "keys", "list", "--email", "admin@localhost", "--json", "--db", db
        )
        keys = json.loads(out)
        assert [k["name"] for k in keys] == ["default", "ci"]
        assert all(k["active"] for k in keys)
        assert second not in out and server.key not in out, "a listing never shows a key"

        code, out, _ = run(capsys, "keys", "revoke", str(keys[1]["id"]), "--db", db)
        assert code == 0
        r = httpx.get(jobs, headers={"Authorization": f"Bearer {second}"})
        assert r.status_code == 401, "revocation takes effect on the next request"
        assert r.headers["content-type"] == "application/problem+json"
        assert httpx.get(jobs, headers={"Authorization": f"Bearer {server.key}"}).status_code == 200
        code, _, err = run(capsys, "keys", "revoke", str(keys[1]["id"]), "--db", db)
        assert code == 1 and "no active key" in err
        code, out, _ = run(capsys, "keys", "list", "--email", "admin@localhost", "--db", db)
        assert "ID" in out.splitlines()[0] and "False" in out
    finally:
        server.kill()


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["users", "create", "--name", "x"]) == 2
    assert main(["nonsense"]) == 2
