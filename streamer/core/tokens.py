"""Stream tokens: what a browser puts in a URL instead of an API key.

``EventSource`` and ``WebSocket`` cannot send headers, and an API key in a URL ends
up in access logs and browser history. A stream token is ``sst_`` + a payload
(job id, user id, the id of the API key that minted it, expiry) + an HMAC-SHA256
over it with a secret kept in the database (so every node accepts every node's
tokens). It opens only the streams of one job, only for reading, and only until it
expires; a stream opened in time may outlive it, but not its key: revoking the key
(or deactivating the user) refuses the token and ends the streams it opened. It is
never stored, and never logged (the access log redacts it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from datetime import UTC, datetime

import orjson

from .errors import Unauthorized
from .keys import Credential
from .ports import KeyReader

TOKEN_PREFIX = "sst_"  # noqa: S105 - a prefix, not a secret
SECRET_NAME = "stream-token"  # noqa: S105 - the secret's name
DEFAULT_TTL = 300.0


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint(
    secret: bytes, job_id: str, credential: Credential, ttl: float = DEFAULT_TTL
) -> tuple[str, str]:
    """A token for one job and its expiry as an API timestamp."""
    expires = time.time() + ttl
    claims = {"j": job_id, "u": credential.user_id, "k": credential.key_id, "e": round(expires, 3)}
    payload = _b64(orjson.dumps(claims))
    signature = _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest())
    expires_at = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{TOKEN_PREFIX}{payload}.{signature}", expires_at


def check(secret: bytes, token: str, job_id: str) -> Credential:
    """The credential the token was minted with; ``Unauthorized`` for anything else."""
    token_job, credential = claims(secret, token)
    if token_job != job_id:
        raise Unauthorized("stream token is for another job")
    return credential


def claims(secret: bytes, token: str) -> tuple[str, Credential]:
    """The job a valid, unexpired token opens, and its credential (``Unauthorized``
    otherwise): for routes that find the job from the token's user (Durable Streams
    paths live in their user's namespace)."""
    if not token.startswith(TOKEN_PREFIX) or not token.isascii():
        raise Unauthorized("not a stream token")  # compare_digest refuses non-ASCII str
    payload, _, signature = token[len(TOKEN_PREFIX) :].partition(".")
    expected = _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected, signature):
        raise Unauthorized("invalid stream token")
    try:
        data = orjson.loads(_unb64(payload))
        token_job, expires = str(data["j"]), float(data["e"])
        credential = Credential(int(data["u"]), int(data["k"]))
    except (binascii.Error, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise Unauthorized("invalid stream token") from exc
    if expires < time.time():
        raise Unauthorized("stream token expired; mint a new one")
    return token_job, credential


async def credential_for_token(storage: KeyReader, token: str, job_id: str) -> Credential:
    credential = check(await storage.server_secret(SECRET_NAME), token, job_id)
    if credential.key_id not in await storage.active_keys([credential.key_id]):
        raise Unauthorized("stream token's key was revoked or its user deactivated")
    return credential
