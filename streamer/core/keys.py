"""API keys: generation, hashing, verification (reading the header is the server's).

A key looks like ``stk_<43 base62 chars><6 base62 checksum chars>``. The ``stk_``
prefix makes a leaked key recognisable to secret scanners, and the CRC32 checksum
lets us reject a mistyped or random string without touching the database (the
GitHub token format). Only the SHA-256 of a key is stored. A lookup narrows the
candidates by the key's first 12 characters and then compares the hashes with
``hmac.compare_digest``, so no timing difference reveals how much of a hash matched.

Every request reads the key from the database (no cache), so a revocation or a
deactivated user is a 401 at the next request on every node. A successful check
yields a ``Credential``: the user and the key's id, which open streams keep so a
periodic re-check can close them when the key stops being valid.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
import zlib
from dataclasses import dataclass

from .errors import Unauthorized, Unprocessable
from .models import User
from .ports import Identity, KeyReader

KEY_PREFIX = "stk_"
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
BODY_LEN = 43  # 62**43 > 2**256: 32 random bytes fit
CHECK_LEN = 6
KEY_LEN = len(KEY_PREFIX) + BODY_LEN + CHECK_LEN
LOOKUP_LEN = 12


ANONYMOUS_KEY = 0  # no key: a request served as the configured anonymous user


@dataclass(frozen=True)
class Credential:
    """Who is calling, and through which key (for a stream token: the key that minted
    it; ``ANONYMOUS_KEY`` for Durable Streams requests served without credentials).
    Streams keep it: revoking the key or deactivating the user ends them."""

    user_id: int
    key_id: int


def _base62(number: int, width: int) -> str:
    digits = []
    while number:
        number, rem = divmod(number, 62)
        digits.append(ALPHABET[rem])
    return "".join(reversed(digits)).rjust(width, "0")


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), CHECK_LEN)


def generate_key() -> str:
    body = _base62(int.from_bytes(secrets.token_bytes(32), "big"), BODY_LEN)
    return KEY_PREFIX + body + _checksum(body)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def lookup_prefix(key: str) -> str:
    """The part of a key stored in clear, enough to narrow a lookup and to show in lists."""
    return key[:LOOKUP_LEN]


def well_formed(key: str) -> bool:
    """Prefix, length, alphabet and checksum: everything that needs no database."""
    if len(key) != KEY_LEN or not key.startswith(KEY_PREFIX) or not key.isascii():
        return False  # hmac.compare_digest raises TypeError on non-ASCII str
    body, check = key[len(KEY_PREFIX) : -CHECK_LEN], key[-CHECK_LEN:]
    if not body.isalnum():  # ASCII (checked above) letters and digits: exactly ALPHABET
        return False
    return hmac.compare_digest(_checksum(body), check)


@functools.lru_cache(maxsize=1024)
def _digest(key: str) -> str | None:
    """The stored form of a well-formed key, or None: pure, so the keys a busy server
    sees again and again are checked and hashed once (only the lookup of what is
    stored for them, which a revocation changes, runs on every request)."""
    return hash_key(key) if well_formed(key) else None


async def check_key(storage: KeyReader, key: str) -> tuple[User, int]:
    """The key's owner and the key's id, or ``Unauthorized``."""
    digest = _digest(key)
    if digest is None:
        raise Unauthorized("malformed API key")
    found: tuple[User, int] | None = None
    for stored_hash, key_id, user in await storage.key_candidates(lookup_prefix(key)):
        if hmac.compare_digest(stored_hash, digest):
            found = (user, key_id)  # no early exit: every candidate costs the same
    if found is None:
        raise Unauthorized("unknown, revoked or inactive API key")
    return found


async def verify_key(storage: KeyReader, key: str) -> User:
    return (await check_key(storage, key))[0]


EMAIL = re.compile(r"[^@\s]+@[^@\s]+")


def parse_email(raw: str) -> str:
    """An email address, as users are identified by it; ``ValueError`` names what is wrong.

    Deliberately loose (one ``@``, something on each side, no spaces, at most 254
    characters): ``admin@localhost`` is a valid identity here, and only a mail server
    can say whether an address receives mail. What it stops is a name or a typo
    (``--email ada``) becoming an identity nobody can type again.
    """
    email = raw.strip()
    if len(email) > 254 or not EMAIL.fullmatch(email):
        raise ValueError(f"not an email address: {raw!r} (expected name@host)")
    return email


async def create_user_with_key(storage: Identity, name: str, email: str) -> tuple[User, str]:
    try:
        email = parse_email(email)
    except ValueError as exc:
        raise Unprocessable(str(exc), field="email") from exc
    user = await storage.create_user(name, email)
    key = await issue_key(storage, user.id, "default")
    return user, key


async def issue_key(storage: Identity, user_id: int, name: str) -> str:
    key = generate_key()
    await storage.create_key(user_id, name, lookup_prefix(key), hash_key(key))
    return key
