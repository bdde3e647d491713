"""Who calls a Durable Streams route, and which stream its path names.

The routes take what the rest of the API takes: an ``Authorization: Bearer`` API
key, or (for reads) a ``?token=`` stream token minted for the stream's job. Paths
live in the caller's own namespace, so another user's stream and a missing one
are the same 404. With ``ds_anonymous_user`` set, a request with neither is served
as that (existing, active) user: public demo streams, and the protocol's
conformance suite, which sends no credentials.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import unquote

from starlette.requests import Request

from ...core import durable, tokens
from ...core.durable import View
from ...core.errors import BadRequest, Gone, NotFound, Unauthorized
from ...core.keys import ANONYMOUS_KEY, KEY_PREFIX, Credential
from .. import access_log
from ..resources import Resources

ROOT = "/v1/stream/"
MAX_PATH_BYTES = 1024
RESERVED = "__ds"  # the protocol's control prefix (subscriptions): no stream lives there


class Access(NamedTuple):
    credential: Credential
    token_job: str | None  # a stream token opens this job only


def parse_path(raw: str, field: str = "path") -> str:
    """A stream's path: 1 KiB at most, printable, no empty, ``.`` or ``..`` segment."""
    if not raw or len(raw.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise BadRequest(f"a stream path is 1 to {MAX_PATH_BYTES} bytes", field=field)
    if not raw.isprintable() or any(p in ("", ".", "..") for p in raw.split("/")):
        raise BadRequest("a stream path has no empty, '.' or '..' segment", field=field)
    if raw.split("/", 1)[0] == RESERVED:
        raise NotFound("stream not found")
    return raw


def source_path(raw: str) -> str:
    """``Stream-Forked-From``: the source's URL path on this server (or its stream path)."""
    path = unquote(raw.strip(), errors="strict")
    return parse_path(path.removeprefix(ROOT), "Stream-Forked-From")


async def caller(request: Request, res: Resources, *, read: bool) -> Access:
    """The request's credential: its API key, a stream token (reads only), or the
    anonymous user; 401 without any."""
    if request.headers.get("authorization") is not None:
        return Access(await res.auth.caller(request), None)
    token = request.query_params.get("token") if read else None
    if token is not None and not token.startswith(KEY_PREFIX):
        secret = await res.storage.identity.server_secret(tokens.SECRET_NAME)
        job_id, credential = tokens.claims(secret, token)
        if credential.key_id not in await res.storage.identity.active_keys([credential.key_id]):
            raise Unauthorized("stream token's key was revoked or its user deactivated")
        access_log.note_user(request.scope, credential.user_id)
        return Access(credential, job_id)
    email = res.settings.ds_anonymous_user
    if not email:
        return Access(await res.auth.caller(request), None)  # its 401, or the key-in-URL one
    user = await res.storage.identity.get_user_by_email(email)
    if user is None or not user.active:
        raise Unauthorized("the anonymous user (ds_anonymous_user) is missing or inactive")
    access_log.note_user(request.scope, user.id)
    return Access(Credential(user.id, ANONYMOUS_KEY), None)


async def find(res: Resources, access: Access, path: str) -> View:
    """The caller's stream at ``path``: 404 when there is none (or it expired), 410
    when it was deleted but its forks still read it."""
    view = await res.storage.streams.find(access.credential.user_id, path)
    if view is None or (access.token_job is not None and access.token_job != view.job.id):
        raise NotFound("stream not found")
    stream = view.stream
    if stream is None:
        return view
    if stream.deleted:
        raise Gone("the stream was deleted; its forks still read it")
    if durable.expired(stream):
        ended = await res.storage.streams.expire(stream.user_id, stream.job_id)
        if ended is not None:
            soft, removed = ended
            close_readers(res, [stream.job_id, *removed])
            if soft:
                raise Gone("the stream expired; its forks still read it")
            raise NotFound("stream not found")
    return view


def close_readers(res: Resources, job_ids: list[str]) -> None:
    for job_id in job_ids:
        res.hub.close_job(job_id, "deleted")


async def touch(res: Resources, view: View) -> None:
    """A read restarts a sliding TTL (HEAD does not: it only looks)."""
    if view.stream is not None and view.stream.ttl is not None:
        await res.storage.streams.touch(view.job.id)
