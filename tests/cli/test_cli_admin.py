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
    assert code == 1 and "already exists" in err and "keys create --email ada@x" in err
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
        code, out, _ = run(capsys, "keys", "revoke", str(keys[1]["id"]), "--db", db)
        assert code == 0 and "already revoked" in out, "revoking twice is safe, and says so"
        code, _, err = run(capsys, "keys", "revoke", "999", "--db", db)
        assert code == 1 and "no API key with id 999" in err and "keys list" in err
        code, out, _ = run(capsys, "keys", "list", "--email", "admin@localhost", "--db", db)
        assert "ID" in out.splitlines()[0] and "False" in out
    finally:
        server.kill()


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["users", "create", "--name", "x"]) == 2
    assert main(["nonsense"]) == 2


def test_one_voice_refusals_exit_1_usage_2_and_repeats_say_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = ["--db", str(tmp_path / "v.db")]
    code, _, err = run(capsys, "users", "create", "--name", "N", "--email", "notanemail", *db)
    assert code == 2 and "not an email address: 'notanemail'" in err
    assert not (tmp_path / "v.db").exists(), "refused before the database is touched"
    assert run(capsys, "users", "create", "--name", "Bo", "--email", " bo@x ", *db)[0] == 0
    code, out, _ = run(capsys, "users", "list", "--json", *db)
    assert [u["email"] for u in json.loads(out)] == ["bo@x"], "trimmed, stored once"

    code, _, err = run(capsys, "users", "deactivate", "--email", "nobody@x", *db)
    assert code == 1 and "no user with email nobody@x" in err and "users list" in err
    code, out, _ = run(capsys, "users", "deactivate", "--email", "bo@x", *db)
    assert code == 0 and out.startswith("deactivated user")
    code, out, _ = run(capsys, "users", "deactivate", "--email", "bo@x", *db)
    assert code == 0 and "already deactivated" in out
    code, _, err = run(capsys, "keys", "create", "--email", "nobody@x", "--name", "k", *db)
    assert code == 1 and "no user with email nobody@x" in err

    code, _, err = run(capsys, "gc", "--older-than", "soon", *db)
    assert code == 2 and "--older-than" in err and "30d" in err
    (tmp_path / "taken.db").write_bytes(b"")
    code, _, err = run(capsys, "backup", str(tmp_path / "taken.db"), *db)
    assert code == 1 and "already exists" in err
    code, _, err = run(capsys, "backup", str(tmp_path / "b.db"), "--db", str(tmp_path / "no.db"))
    assert code == 1 and "no SQLite database at" in err and "--db" in err
    monkeypatch.setenv("STREAMER_SYNC", "sometimes")
    code, _, err = run(capsys, "users", "list", *db)
    assert code == 2 and "STREAMER_SYNC must be normal or full" in err
