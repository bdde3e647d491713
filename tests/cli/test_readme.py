"""The README works as pasted: its "Try it" session runs as written and prints what it shows.

The session's first command, ``.venv/bin/streamer serve``, runs from the repository's
root as written, with a temporary database and a free port (``STREAMER_DB``,
``STREAMER_PORT``: a reader's machine has neither a test database nor port 8000
free for certain); its output must read as the README shows, with that path and
port. Every later shell block then runs, in order, in one shell from the repository's
root, after the two ``export`` lines the server printed (what a reader pastes), with
``STREAMER_DB`` still naming the server's database (a reader's default one), and must
exit 0 and print what the text block after it shows: ``...`` is any text (a line of
its own: any lines), ``<JOB_ID>`` a job id, two or more spaces any run of spaces
(table columns).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from streamer.cli import exits

from ..support import REPO
from ..support.live import free_socket
from ..support.procs import ServerProcess

README = REPO / "README.md"
STREAMER = REPO / ".venv" / "bin" / "streamer"
SHOWN_DB = "/home/you/.local/share/streamer/streamer.db"
SHOWN_URL = "http://127.0.0.1:8000"


def section(title: str) -> str:
    return README.read_text().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def session() -> list[tuple[str, str | None]]:
    """The shell blocks of "Try it", each with the output block that follows it."""
    blocks = re.findall(r"```(sh|text)\n(.*?)```", section("Try it"), re.DOTALL)
    steps = []
    for i, (kind, body) in enumerate(blocks):
        if kind == "sh":
            after = blocks[i + 1] if i + 1 < len(blocks) else ("", "")
            steps.append((body, after[1] if after[0] == "text" else None))
    return steps


def pattern(shown: str) -> re.Pattern[str]:
    """The text a block shows as a regular expression (the rules are in the docstring)."""
    parts = []
    for line in shown.rstrip("\n").split("\n"):
        if line == "...":
            parts.append(r"(?:[^\n]*\n)*?")
            continue
        text = re.escape(line)
        text = text.replace(r"\.\.\.", ".*").replace("<JOB_ID>", "[A-Za-z0-9_-]{16}")
        parts.append(re.sub(r"(?:\\ ){2,}", " {2,}", text) + "\n")
    return re.compile("".join(parts))


def assert_shows(shown: str, printed: str, what: str) -> None:
    printed = "".join(line.rstrip() + "\n" for line in printed.splitlines())
    assert pattern(shown).fullmatch(printed), (
        f"{what}\n--- README shows:\n{shown}\n--- got:\n{printed}"
    )


def test_the_pattern_rules() -> None:
    assert pattern("a ... z\n...\nID  NAME\n<JOB_ID>\n").fullmatch(
        "a b c z\nmore\nlines\nID     NAME\nwaQu66qjS56MhqNq\n"
    )
    assert not pattern("ID  NAME\n").fullmatch("ID NAME\n")
    assert not pattern("1\nliftoff\n").fullmatch("2\n1\nliftoff\n")


def test_the_try_it_session_runs_as_pasted(tmp_path: Path) -> None:
    if not STREAMER.exists():
        pytest.skip(f"{STREAMER} is missing: the README installs into .venv (scripts/test does)")
    (serve, serve_shows), *steps = session()
    assert serve.strip() == ".venv/bin/streamer serve" and serve_shows and len(steps) >= 5
    with free_socket() as sock:
        port = sock.getsockname()[1]
    home = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    db = tmp_path / "streamer.db"
    server = ServerProcess(
        db,
        port=port,
        command=[".venv/bin/streamer"],
        cwd=REPO,
        flags=[],
        env={"STREAMER_PORT": str(port), **home},
    )
    server.start(timeout=60)
    try:
        url = f"http://127.0.0.1:{port}"
        shown = serve_shows.replace(SHOWN_DB, str(db)).replace(SHOWN_URL, url)
        last = pattern(shown.rstrip("\n").rsplit("\n", 1)[-1])
        deadline = time.monotonic() + 20
        while not (found := last.search(server.log.read_text())):  # its "listening" line
            assert time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.05)
        head = server.log.read_text()[: found.end()]
        assert_shows(shown, head, "streamer serve")

        script = [f"export {name}={shlex.quote(value)}" for name, value in server.exports().items()]
        for i, (commands, _) in enumerate(steps):
            script += [f"echo '@@ step {i}'", commands.rstrip("\n"), 'echo "@@ status $?"']
        done = subprocess.run(
            ["bash", "-c", "\n".join(script)],
            cwd=REPO,
            env={"PATH": "/usr/bin:/bin", "STREAMER_DB": str(db), **home},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
        )
        printed = re.split(r"^@@ step \d+\n", done.stdout, flags=re.MULTILINE)[1:]
        assert len(printed) == len(steps), done.stdout
        for (commands, shows), out in zip(steps, printed, strict=True):
            out, status = out.rsplit("@@ status ", 1)
            assert status.strip() == "0", f"{commands}\nexited {status}:\n{out}"
            if shows is not None:
                assert_shows(shows, out, commands)
    finally:
        server.terminate()


def test_the_exit_status_table_is_the_one_help_prints() -> None:
    text = README.read_text()
    table = text.split("<!-- exit-status-table")[1].split("-->", 1)[1]
    assert table.split("<!-- /exit-status-table -->")[0].strip() == exits.markdown()


def test_files_the_readme_names_exist() -> None:
    text = README.read_text()
    named = set(re.findall(r"\]\(((?!https?:|#)[^)\s]+)\)", text))
    named |= set(re.findall(r"`((?:tests|streamer|deploy|docs|scripts|bench|\.ci)/[^`\s]*)`", text))
    missing = sorted(n for n in named if not (REPO / n).exists())
    assert not missing, f"README names files that do not exist: {missing}"
