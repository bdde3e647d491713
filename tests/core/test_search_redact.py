"""Search (``core/search.py``) against a plain Python reference on random logs with
ANSI noise, and redaction (``core/redact.py``): forms of a secret, token formats,
sealing."""

from __future__ import annotations

import base64
import random
import re
from urllib.parse import quote

import pytest

from streamer.core import redact
from streamer.core.errors import BadRequest
from streamer.core.models import NewEvent
from streamer.core.search import Found, Matcher, Query, joined
from streamer.core.text import plain_text, search_text

WORDS = ["error", "Error", "ERROR", "warn", "ok", "build", "täst", "naïve", "x", "42", "a.b"]
NOISE = ["\x1b[31m", "\x1b[0m", "\x1b[1;32m", "\x1b]8;;http://x\x07", "\x1b[K", "\r", "\x07"]


def noisy(rng: random.Random, text: str) -> str:
    """``text`` with escapes inserted at random places (inside words too)."""
    out = []
    for ch in text:
        if rng.random() < 0.15:
            out.append(rng.choice(NOISE))
        out.append(ch)
    return "".join(out)


def random_log(rng: random.Random, n: int) -> list[str | None]:
    events: list[str | None] = []
    for _ in range(n):
        if rng.random() < 0.05:
            events.append(None)
            continue
        lines = [
            " ".join(rng.choices(WORDS, k=rng.randint(0, 6))) for _ in range(rng.randint(1, 3))
        ]
        text = "\n".join(lines) + ("\n" if rng.random() < 0.8 else "")
        events.append(noisy(rng, text))
    return events


def reference(events: list[str | None], query: Query) -> list[tuple[int, int, str]]:
    """Every (index, line in event, text) whose plain line matches: Python's own re."""
    flags = 0 if query.case_sensitive else re.IGNORECASE
    pattern = re.compile(query.text if query.regex else re.escape(query.text), flags)
    found = []
    for index, data in enumerate(events):
        if not data:
            continue
        for k, line in enumerate(plain_text(data).split("\n")):
            if line and pattern.search(line):
                found.append((index, k, line))
    return found


def scan_all(events: list[str | None], query: Query, limit: int) -> list[tuple[int, int, str]]:
    """Page through the log as a reader would: from_index = next_index."""
    matcher = query.compile()
    start, out = 0, []
    while start < len(events):
        texts = [search_text(d) for d in events[start:]]
        found, stop = matcher.scan(joined(texts), start, limit)
        assert len(found) <= limit
        out.extend((f.index, f.line, f.text) for f in found)
        if stop is None:
            break
        assert stop > start
        start = stop
    return out


@pytest.mark.parametrize("seed", range(12))
def test_search_matches_a_plain_python_reference_on_noisy_logs(seed: int) -> None:
    rng = random.Random(seed)
    events = random_log(rng, 400)
    queries = [
        Query("error"),
        Query("Error", case_sensitive=True),
        Query("TÄST"),
        Query("a.b"),  # a literal dot
        Query("warn ok"),
        Query(r"^build\b", regex=True),
        Query(r"(ok|42)$", regex=True, case_sensitive=True),
        Query(r"e.r", regex=True),
    ]
    for query in queries:
        expected = reference(events, query)
        assert scan_all(events, query, 10_000) == expected, query
        limit = rng.randint(1, 7)
        # Pages never split an event's matches; only an event holding more matching
        # lines than a whole page is cut to its first ``limit``.
        per_event: dict[int, int] = {}
        paged = []
        for found in expected:
            per_event[found[0]] = per_event.get(found[0], 0) + 1
            if per_event[found[0]] <= limit:
                paged.append(found)
        assert scan_all(events, query, limit) == paged, query


def test_the_scan_is_the_same_through_the_bindings_public_search() -> None:
    """Matcher uses RE2's compiled program directly where the binding has it; any
    pattern with only a public ``search`` (here Python's own) finds the same lines."""
    rng = random.Random(99)
    texts = [search_text(d) for d in random_log(rng, 300)]
    fast = Query("error").compile()
    public = Matcher(re.compile(rb"(?i)error"))
    assert fast.search is not public.search
    assert fast.scan(joined(texts), 0, 10_000) == public.scan(joined(texts), 0, 10_000)
    assert fast.count(joined(texts), 0) == public.count(joined(texts), 0) > 0


def test_a_word_split_by_a_colour_change_still_matches() -> None:
    matcher = Query("failed").compile()
    found, _ = matcher.scan(joined([search_text("\x1b[31mfai\x1b[1mled\x1b[0m: 3\n")]), 7, 10)
    assert found == [Found(7, 0, "failed: 3")]
    assert matcher.matches("\x1b[31mFAI\x1b[0mLED")


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        (Query("(a)\\1", regex=True), "backreferences"),
        (Query("(?<=a)b", regex=True), "look-arounds"),
        (Query("x{1001}", regex=True), "repetition"),
        (Query("(", regex=True), "missing"),
        (Query(""), "empty"),
        (Query("a\nb"), "one line"),
        (Query("x" * 1001), "longer"),
    ],
)
def test_patterns_that_could_run_away_or_are_malformed_are_refused(
    query: Query, reason: str
) -> None:
    with pytest.raises(BadRequest) as info:
        query.compile()
    assert info.value.extra.get("field") == "q" or "q" in info.value.detail


def test_an_exponential_backtracking_pattern_runs_in_linear_time() -> None:
    """(a+)+b on a long run of a's: catastrophic for a backtracking engine, nothing for RE2."""
    matcher = Query("(a+)+b", regex=True).compile()
    text = search_text("a" * 200_000 + "c")
    assert matcher.scan(joined([text] * 5), 0, 10) == ([], None)


SECRET = "hunter2-Sup3r/secret+value"


def test_registered_secrets_are_masked_in_every_form() -> None:
    rules = redact.Rules.from_setting("default", b"k" * 32)
    redactor = rules.for_secrets([SECRET, "-----BEGIN KEY-----\nAAAABBBBCCCC\n-----END KEY-----"])
    b64 = base64.b64encode(SECRET.encode()).decode()
    forms = [SECRET, b64, b64.rstrip("="), quote(SECRET, safe=""), "AAAABBBBCCCC"]
    events = [NewEvent("log", f"value={form}\n", None) for form in forms]
    events.append(NewEvent("log", "nothing here\n", None))
    out, count = redactor.apply(events)
    assert count == len(forms)
    assert [e.data for e in out[:-1]] == ["value=[REDACTED]\n"] * len(forms)
    assert out[-1] is events[-1]


@pytest.mark.parametrize(
    "token",
    [
        "stk_" + "A1b2" * 12 + "xyz",
        "sst_eyJqIjoiYWJjIn0abcdef.aGVsbG8gd29ybGQhIQ",
        "ghp_" + "a" * 36,
        "github_pat_" + "B" * 40,
        "AKIAIOSFODNN7EXAMPLE",
        "xoxb-123456789012-abcdefghij",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlZm9vYmFy",
    ],
)
def test_well_known_token_formats_are_masked_by_default(token: str) -> None:
    redactor = redact.Rules.from_setting("default", b"k" * 32).default
    out, count = redactor.apply([NewEvent("log", f"token: {token} end\n", None)])
    assert (out[0].data, count) == ("token: [REDACTED] end\n", 1)


def test_bearer_keeps_its_word_and_none_turns_patterns_off() -> None:
    default = redact.Rules.from_setting("default", b"k" * 32).default
    assert default.text("Authorization: Bearer abcdefghijklmnop1234")[0] == (
        "Authorization: Bearer [REDACTED]"
    )
    assert redact.Rules.from_setting("none", b"k" * 32).default.text("ghp_" + "a" * 36)[1] == 0
    with pytest.raises(re.error):
        redact.parse_patterns("default (unclosed")


def test_sealed_secrets_hold_no_form_of_the_secret_and_unseal_with_the_key() -> None:
    key = b"\x01" * 32
    sealed = redact.seal([SECRET], key)
    for form in redact.forms(SECRET):
        assert form.encode() not in sealed
    assert redact.unseal(sealed, key) == [SECRET]
    assert redact.unseal(sealed, b"\x02" * 32) != [SECRET] if _decodes(sealed) else True
    assert redact.seal([SECRET], key) != sealed  # a fresh nonce every time


def _decodes(sealed: bytes) -> bool:
    try:
        redact.unseal(sealed, b"\x02" * 32)
    except ValueError:
        return False
    return True


def test_metadata_strings_keys_and_nested_values_are_redacted() -> None:
    redactor = redact.Rules.from_setting("none", b"k" * 32).for_secrets([SECRET])
    value, count = redactor.value({"a": [SECRET, 1, {"b": f"x{SECRET}"}], SECRET: True})
    assert value == {"a": ["[REDACTED]", 1, {"b": "x[REDACTED]"}], "[REDACTED]": True}
    assert count == 3
