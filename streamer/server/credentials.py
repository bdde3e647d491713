"""Who is calling: the API key in the ``Authorization`` header, or a stream token.

Checking a key is ``core.keys``; this module reads it from a request, refuses keys
in URLs, and records each key's use (``last_used_at``) at most once a minute per
key and node, so a busy key costs one write a minute, not one per request.
"""

from __future__ import annotations

import logging
import time

from starlette.requests import HTTPConnection

from ..core import keys, tokens
from ..core.errors import StreamerError, Unauthorized
from ..core.keys import KEY_PREFIX, Credential
from ..core.models import utcnow
from ..core.ports import Identity
from . import access_log

log = logging.getLogger("streamer")
KEY_TOUCH_SECONDS = 60.0  # last_used_at is written at most this often per key (per node)


def bearer_key(conn: HTTPConnection) -> str:
    """The API key of a request; never from the URL, where it would reach access logs."""
    if conn.scope.get("query_string"):  # most requests have none: skip parsing it
        for _, value in conn.query_params.multi_items():  # under any parameter name
            if value.startswith(KEY_PREFIX):
                raise Unauthorized(
                    "API keys are not accepted in URLs; use the Authorization header"
                )
    headers = conn.headers.getlist("authorization")
    if not headers:
        raise Unauthorized("missing Authorization: Bearer <API key> header")
    if len(headers) > 1:
        raise Unauthorized("more than one Authorization header")
    scheme, _, key = headers[0].partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("Authorization must be 'Bearer <API key>'")
    return key.strip()


class Authenticator:
    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.touched: dict[int, float] = {}  # key id -> monotonic time of the last write

    async def caller(self, conn: HTTPConnection) -> Credential:
        """The caller's credential from its ``Authorization`` header (401 otherwise)."""
        user, key_id = await keys.check_key(self.identity, bearer_key(conn))
        access_log.note_user(conn.scope, user.id)
        await self._touch(key_id)
        return Credential(user.id, key_id)

    async def reader(self, conn: HTTPConnection, job_id: str) -> Credential:
        """A stream's reader: a ``?token=`` stream token for ``job_id``, or the header.
        An API key in the URL is refused either way."""
        token = conn.query_params.get("token")
        if token is None or token.startswith(KEY_PREFIX):
            return await self.caller(conn)
        credential = await tokens.credential_for_token(self.identity, token, job_id)
        access_log.note_user(conn.scope, credential.user_id)
        return credential

    async def _touch(self, key_id: int) -> None:
        now = time.monotonic()
        last = self.touched.get(key_id)
        if last is not None and now - last < KEY_TOUCH_SECONDS:
            return
        self.touched[key_id] = now
        try:
            await self.identity.touch_key(key_id, utcnow())
        except StreamerError as exc:  # bookkeeping must not fail the request it rides on
            log.warning("could not record the use of key %d: %s", key_id, exc.detail)
