"""The benchmark suite runs end to end at tiny sizes and verifies what it delivered.

One subprocess runs ``python -m bench.run --quick --no-nchan --only ingest --only
replay`` against a real ``streamer serve``; every JSON line it appends must parse and
say its deliveries were checked (counts, order, no duplicate, no gap). Nginx is never
needed: ``--no-nchan`` keeps the Nchan side out.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_quick_ingest_and_replay_verify_their_deliveries(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--no-nchan"]
        + ["--only", "ingest", "--only", "replay", "--results", str(results)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in results.read_text().splitlines()]
    by_scenario: dict[str, list[dict[str, object]]] = {}
    for record in records:
        assert record["quick"] is True
        assert record["rev"]
        by_scenario.setdefault(str(record["scenario"]), []).append(record)
    assert not any(name.endswith(".error") for name in by_scenario), by_scenario

    ingest = {r["mode"] if "mode" in r else r["scenario"]: r for r in records}
    assert ingest["executemany"]["verified"] is True
    for mode in ("ingest.single", "ingest.batch100", "ingest.batch1000"):
        (record,) = [r for r in by_scenario[mode] if r["server"] == "streamer"]
        assert record["verified"] is True
        assert record["errors"] == 0 and record["jobs_wrong"] == 0
        assert isinstance(record["events_per_s"], int) and record["events_per_s"] > 0

    single = [r for r in by_scenario["replay.single"] if r["server"] == "streamer"]
    assert {r["transport"] for r in single} == {"sse", "ws"}
    for record in single:
        assert record["verified"] is True
        assert record["delivered"] == record["job_events"] == record["events_each"]
        assert record["dups"] == 0 and record["gaps"] == 0
    storm = [r for r in by_scenario["replay.storm"] if r["server"] == "streamer"]
    assert len(storm) == 2
    for record in storm:
        assert record["verified"] is True
        assert record["complete"] == record["readers"]
        assert record["delivered"] == record["readers"] * record["events_each"]
