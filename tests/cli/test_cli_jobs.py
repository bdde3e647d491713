"""``streamer jobs``: tables for people, JSON for scripts, settings from flags, env or a file."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from streamer.cli.client import Client, ClientSettings
from streamer.cli.jobs import duration, list_jobs

from ..support.live import LiveServer
from .test_cli_follow import Capsys, cli, run_main

COLUMNS = ["ID", "NAME", "STATUS", "EVENTS", "DURATION", "CREATED"]


async def three_jobs(server: LiveServer) -> tuple[str, str, str]:
    """Oldest first: queued, queued with a hostile name, completed with two events."""
    first = await server.create_job(name="first")
    second = await server.create_job(name="second \x1b]0;evil\x07")
    third = await server.create_job(name="third")
    r = await server.client().post(
        f"/api/v1/jobs/{third}/events",
        json={"events": [{"data": "x\n"}, {"type": "complete", "success": True}]},
    )
    assert r.status_code == 201
    return first, second, third


async def test_list_is_a_readable_table_newest_first_with_remote_text_escaped(
    live_server: LiveServer, capsys: Capsys
) -> None:
    first, second, third = await three_jobs(live_server)
    code, out, _ = await cli(capsys, live_server, "jobs", "list")
    rows = out.splitlines()
    assert code == 0 and rows[0].split() == COLUMNS
    assert [row.split()[0] for row in rows[1:]] == [third, second, first]
    assert rows[1].split()[1:4] == ["third", "completed", "2"]
    assert "\\x1b]0;evil\\x07" in out and "\x1b" not in out, "a name cannot drive the terminal"


async def test_list_json_is_an_array_of_jobs_with_ids_filtered_and_limited(
    live_server: LiveServer, capsys: Capsys
) -> None:
    first, second, third = await three_jobs(live_server)
    code, out, _ = await cli(capsys, live_server, "jobs", "list", "--json")
    jobs = json.loads(out)
    assert code == 0 and [job["id"] for job in jobs] == [third, second, first]
    assert jobs[0]["status"] == "completed" and jobs[0]["event_count"] == 2
    _, out, _ = await cli(capsys, live_server, "jobs", "list", "--json", "--status", "queued")
    assert [job["id"] for job in json.loads(out)] == [second, first]
    _, out, _ = await cli(capsys, live_server, "jobs", "list", "--json", "--limit", "1")
    assert [job["id"] for job in json.loads(out)] == [third]
    _, out, _ = await cli(capsys, live_server, "jobs", "list", "--json", "--status", "failed")
    assert json.loads(out) == []


async def test_list_follows_the_cursor_across_pages(live_server: LiveServer) -> None:
    ids = [await live_server.create_job(name=f"j{i}") for i in range(5)]
    settings = ClientSettings(live_server.url, live_server.key)
    async with Client(settings) as client:
        jobs = await list_jobs(client, None, 4, page_size=2)
        assert [job["id"] for job in jobs] == ids[::-1][:4]
        assert len(await list_jobs(client, None, 50, page_size=2)) == 5


async def test_show_and_cancel_with_their_exit_statuses(
    live_server: LiveServer, capsys: Capsys
) -> None:
    job = await live_server.create_job(name="build")
    r = await live_server.client().post(f"/api/v1/jobs/{job}/events", json={"data": "x\n"})
    assert r.status_code == 201
    code, out, _ = await cli(capsys, live_server, "jobs", "show", job)
    fields = dict(line.split(":", 1) for line in out.splitlines())
    assert code == 0 and fields["status"].strip() == "running"
    assert fields["events"].strip() == "1" and fields["duration"].strip().endswith("s")
    code, out, _ = await cli(capsys, live_server, "jobs", "show", job, "--json")
    assert code == 0 and json.loads(out)["id"] == job

    code, out, _ = await cli(capsys, live_server, "jobs", "cancel", job, "--json")
    assert code == 0 and json.loads(out)["status"] == "cancelled"
    code, _, err = await cli(capsys, live_server, "jobs", "cancel", job)
    assert code == 0 and "already cancelled" in err, "cancelling twice is safe, and says so"
    done = await live_server.create_job(name="done")
    r = await live_server.client().post(
        f"/api/v1/jobs/{done}/events", json={"type": "complete", "success": True}
    )
    assert r.status_code == 201
    code, _, err = await cli(capsys, live_server, "jobs", "cancel", done)
    assert code == 1 and "has already completed" in err and "queued or running" in err
    code, _, err = await cli(capsys, live_server, "jobs", "show", "nope")
    assert code == 1 and "not found" in err and "jobs list" in err, "names the next step"
    assert (await cli(capsys, live_server, "jobs", "cancel", "nope"))[0] == 1
    assert (await run_main(capsys, "jobs"))[0] == 2


def test_duration_reads_like_a_person_would_say_it() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    start = "2026-01-01T10:00:00.000000Z"
    assert duration({"started_at": None}) is None
    assert duration({"started_at": "2026-01-01T11:59:55.500000Z"}, now) == "4.5s"
    assert duration({"started_at": "2026-01-01T11:56:53.000000Z"}, now) == "3m07s"
    assert duration({"started_at": start, "finished_at": "2026-01-01T12:05:00Z"}) == "2h05m"


async def test_settings_come_from_flags_then_env_then_the_config_file(
    live_server: LiveServer,
    capsys: Capsys,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("STREAMER_URL", live_server.url)
    monkeypatch.setenv("STREAMER_API_KEY", live_server.key)
    assert (await run_main(capsys, "jobs", "list", "--json"))[0] == 0
    code, _, err = await run_main(capsys, "jobs", "list", "--api-key", "stk_wrong")
    assert code == 1 and "401" in err, "a flag wins over the environment"
    assert "STREAMER_API_KEY" in err and "keys create" in err, "names the next step"

    monkeypatch.delenv("STREAMER_URL")
    monkeypatch.delenv("STREAMER_API_KEY")
    code, _, err = await run_main(capsys, "jobs", "list")
    assert code == 2 and "no API key" in err
    (tmp_path / "streamer").mkdir()
    (tmp_path / "streamer" / "config.toml").write_text(
        f'url = "{live_server.url}"\napi_key = "{live_server.key}"\n'
    )
    assert (await run_main(capsys, "jobs", "list", "--json"))[0] == 0
