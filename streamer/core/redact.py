"""Secret redaction: what a producer must never get stored, streamed or shown.

Every appended event's ``data`` (and a new job's ``metadata`` strings) is redacted by
``journal`` before it is encoded, so nothing unredacted is ever stored, published or
indexed for search. Two sources of what to redact:

- ``Rules``: the server's token formats (``STREAMER_REDACT_PATTERNS``; ``default``
  is ``DEFAULT_PATTERNS``: our own ``stk_`` keys and ``sst_`` stream tokens, GitHub,
  GitLab, AWS, Slack, Google, npm, PyPI, Stripe, JWTs, bearer tokens and private-key
  blocks);
- a job's own ``secrets``, given when it is created: each one, its base64 forms, its
  URL-encoded forms, and each line of a multi-line secret (a log printing it line by
  line, one event each, leaks no line).

A job's secrets are kept only sealed (``seal``): XORed with a keystream derived, per
job, from a server secret and a random nonce, so the database file and its WAL never
hold a registered secret in plain form (nor its encoded forms), and they are
dropped when the job ends. ``Rules.for_job`` turns the sealed bytes back into a
``Redactor``, cached per process, so a busy job pays the unsealing once.

The cost for an event that holds nothing to redact is one RE2 scan of its text,
shared by a whole batch (the texts joined), linear in its length whatever the
patterns: ``Redactor.apply`` looks closer (with ``re``) only when that finds
something.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote, quote_plus

import orjson
import re2  # type: ignore[import-untyped]

from .models import NewEvent

MASK = "[REDACTED]"
MIN_SECRET = 4  # shorter values would redact ordinary text
MAX_SECRET = 64 * 1024
MAX_SECRETS = 100
CACHE = 1024  # jobs whose redactor a process keeps unsealed
SECRET_NAME = "redaction"  # noqa: S105 - the name of the server secret sealing derives from

DEFAULT_PATTERNS: tuple[str, ...] = (
    r"stk_[0-9A-Za-z]{20,}",  # streamer API keys
    r"sst_[0-9A-Za-z_-]{16,}\.[0-9A-Za-z_-]{16,}",  # streamer stream tokens
    r"gh[pousr]_[0-9A-Za-z]{30,}",  # GitHub tokens
    r"github_pat_[0-9A-Za-z_]{30,}",
    r"glpat-[0-9A-Za-z_-]{20,}",  # GitLab personal access tokens
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",  # AWS access key ids
    r"xox[abposr]-[0-9A-Za-z-]{10,}",  # Slack tokens
    r"https://hooks\.slack\.com/services/[0-9A-Za-z/_-]+",
    r"AIza[0-9A-Za-z_-]{35}",  # Google API keys
    r"npm_[0-9A-Za-z]{36}",
    r"pypi-AgE[0-9A-Za-z_-]{50,}",
    r"[sr]k_live_[0-9A-Za-z]{20,}",  # Stripe
    r"eyJ[0-9A-Za-z_-]{8,}\.eyJ[0-9A-Za-z_-]{8,}\.[0-9A-Za-z_-]{8,}",  # JWTs
    r"(?<=[Bb]earer )[0-9A-Za-z._~+/-]{16,}=*",  # Authorization: Bearer ...
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
)


def parse_patterns(setting: str) -> list[str]:
    """``STREAMER_REDACT_PATTERNS``: whitespace-separated regexes, ``default`` standing
    for ``DEFAULT_PATTERNS`` (so ``default mycorp_[0-9a-f]{32}`` adds one), ``none``
    for no pattern. A pattern cannot hold a literal space: write ``\\s`` or ``\\x20``."""
    patterns: list[str] = []
    for word in setting.split():
        if word == "default":
            patterns.extend(DEFAULT_PATTERNS)
        elif word != "none":
            re.compile(word)  # re.error names what is wrong
            patterns.append(word)
    return patterns


def forms(secret: str) -> set[str]:
    """Every form of ``secret`` a log may show: itself, base64 (standard and URL-safe,
    padded or not), URL-encoded, and each line of a multi-line secret."""
    found = {secret}
    raw = secret.encode("utf-8", "surrogatepass")
    for encoded in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        text = encoded.decode()
        found.update((text, text.rstrip("=")))
    found.update((quote(secret, safe=""), quote_plus(secret), quote(secret)))
    if "\n" in secret:
        found.update(line.strip("\r") for line in secret.split("\n"))
    return {form for form in found if len(form) >= MIN_SECRET}


def _re2_literal(text: str) -> str:
    """``text`` as an RE2 pattern matching exactly it (every other character as
    ``\\x{...}``, which RE2 reads the same in any position)."""
    return "".join(c if c.isascii() and c.isalnum() else f"\\x{{{ord(c):x}}}" for c in text)


class Redactor:
    """Everything one job redacts: a linear-time RE2 scan that finds whether a text
    holds anything to mask (``detect``), and a ``re`` pattern that masks it (``mask``:
    run only on what the scan flagged; ``re`` for its look-behinds, which RE2 lacks).
    A pattern RE2 cannot run is scanned for with ``re`` instead, at ``re``'s cost."""

    __slots__ = ("mask", "detect")

    def __init__(self, patterns: Iterable[str], literals: Iterable[str] = ()) -> None:
        # Longest literal first: a secret that contains another is masked whole.
        ordered = sorted(set(literals), key=len, reverse=True)
        patterns = list(patterns)
        parts = [re.escape(s) for s in ordered] + patterns
        self.mask: re.Pattern[str] | None = None
        self.detect: Any = None
        if parts:
            mask = self.mask = re.compile("|".join(f"(?:{p})" for p in parts))
            # A look-behind only narrows a match: without it the scan finds a superset.
            loose = [p.replace("(?<=", "(?:").replace("(?<!", "(?:") for p in patterns]
            options = re2.Options()
            options.log_errors = False
            options.dot_nl = True
            try:
                scan = [_re2_literal(s) for s in ordered] + loose
                self.detect = re2.compile("|".join(f"(?:{p})" for p in scan), options).search
            except re2.error:
                slow = mask.search
                self.detect = lambda raw: slow(raw.decode("utf-8", "surrogatepass"))

    def text(self, value: str) -> tuple[str, int]:
        if self.mask is None:
            return value, 0
        return self.mask.subn(MASK, value)

    def apply(self, events: Sequence[NewEvent]) -> tuple[Sequence[NewEvent], int]:
        """``events`` with secrets masked in ``data``, and how many were masked."""
        detect, mask = self.detect, self.mask
        if detect is None or mask is None:
            return events, 0
        if len(events) == 1:
            data = events[0].data
            if not data or detect(data.encode("utf-8", "surrogatepass")) is None:
                return events, 0
        else:
            joined = "\n".join([e.data for e in events if e.data])
            if detect(joined.encode("utf-8", "surrogatepass")) is None:
                return events, 0
        out: list[NewEvent] = []
        total = 0
        for event in events:
            if event.data:
                data, count = mask.subn(MASK, event.data)
                if count:
                    total += count
                    event = NewEvent(event.type, data, event.success)
            out.append(event)
        return out, total

    def value(self, value: Any) -> tuple[Any, int]:
        """A JSON value with every string in it (keys too) redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            items = [self.value(v) for v in value]
            return [v for v, _ in items], sum(n for _, n in items)
        if isinstance(value, dict):
            out, total = {}, 0
            for key, item in value.items():
                new_key, a = self.text(key)
                out[new_key], b = self.value(item)
                total += a + b
            return out, total
        return value, 0


def _keystream(key: bytes, nonce: bytes, size: int) -> bytes:
    blocks = (size + 63) // 64
    return b"".join(
        hashlib.blake2b(nonce + n.to_bytes(8, "big"), key=key).digest() for n in range(blocks)
    )[:size]


def seal(values: Sequence[str], key: bytes) -> bytes:
    """``values`` as stored: a random nonce, then their JSON XORed with a keystream
    (BLAKE2b keyed with the server secret, in counter mode)."""
    nonce = secrets.token_bytes(16)
    plain = orjson.dumps(list(values))
    stream = _keystream(key, nonce, len(plain))
    return nonce + bytes(a ^ b for a, b in zip(plain, stream, strict=True))


def unseal(sealed: bytes, key: bytes) -> list[str]:
    nonce, body = sealed[:16], sealed[16:]
    stream = _keystream(key, nonce, len(body))
    values: list[str] = orjson.loads(bytes(a ^ b for a, b in zip(body, stream, strict=True)))
    return values


class Rules:
    """The server's redaction: its patterns and the key jobs' secrets are sealed with."""

    def __init__(self, patterns: Sequence[str], key: bytes) -> None:
        self.patterns = list(patterns)
        self.key = key
        self.default = Redactor(self.patterns)
        self._jobs: OrderedDict[bytes, Redactor] = OrderedDict()

    @classmethod
    def from_setting(cls, setting: str, key: bytes) -> Rules:
        return cls(parse_patterns(setting), key)

    def seal(self, values: Sequence[str]) -> bytes | None:
        return seal(values, self.key) if values else None

    def for_secrets(self, values: Sequence[str]) -> Redactor:
        literals = set().union(*(forms(v) for v in values)) if values else set()
        return Redactor(self.patterns, literals) if literals else self.default

    def for_job(self, sealed: bytes | None) -> Redactor:
        """The redactor of a job whose secrets are ``sealed`` (``None``: none)."""
        if sealed is None:
            return self.default
        found = self._jobs.get(sealed)
        if found is None:
            found = self._jobs[sealed] = self.for_secrets(unseal(sealed, self.key))
            while len(self._jobs) > CACHE:
                self._jobs.popitem(last=False)
        return found

    def forget(self, sealed: bytes | None) -> None:
        """The job ended: its secrets leave this process's memory too."""
        if sealed is not None:
            self._jobs.pop(sealed, None)
