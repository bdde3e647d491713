"""Getting a command's output into a job: a bounded buffer, batching, exactly-once appends.

``LineBuffer`` sits between the pipe readers and the one sender. It is bounded in
bytes: when the server is slow or away, the buffer fills, the readers wait, the
pipes fill and the command blocks in ``write()`` — backpressure instead of unbounded
memory. ``take()`` hands the sender a batch as soon as it is full, or once its oldest
line has waited ``linger`` seconds, so a burst costs a few requests and a trickle is
never held back more than ~100 ms.

``Uploader.append`` sends a batch with ``?expected_index=N`` and retries transient
failures with the same N. A 409 after a retry is resolved, never guessed: the server
reports its next index, and the job's status tells a batch that landed (the response
was lost) from a job closed by someone else (a cancel also appends one event).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import orjson

from .client import Client, ClientError

FINAL = frozenset({"completed", "failed", "cancelled"})


def encode_log(text: str) -> bytes:
    """One log event, encoded once when it is read, not when it is (re)sent."""
    return b'{"data":' + orjson.dumps(text) + b"}"


def encode_complete(success: bool) -> bytes:
    return b'{"type":"complete","success":%s}' % (b"true" if success else b"false")


def decode_data(item: bytes) -> str:
    data = orjson.loads(item).get("data")
    return data if isinstance(data, str) else ""


class JobClosed(ClientError):
    """The job reached a final status that this runner did not give it (a cancel)."""


class LineBuffer:
    """Encoded events waiting for the sender, bounded to ``limit`` bytes."""

    def __init__(self, limit: int, *, max_events: int = 5000, max_bytes: int = 512 * 1024) -> None:
        self.limit, self.max_events, self.max_bytes = limit, max_events, max_bytes
        self.items: deque[bytes] = deque()
        self.size = 0
        self.oldest: float | None = None  # when the oldest waiting item arrived
        self.closed = False
        self.dropping = False
        self._data = asyncio.Event()
        self._space = asyncio.Event()

    def _full_batch(self) -> bool:
        return len(self.items) >= self.max_events or self.size >= self.max_bytes

    async def put(self, item: bytes) -> bool:
        """Queue ``item``, waiting while the buffer is over its limit (the backpressure).

        False if the buffer was dropped instead: the item will never be sent.
        """
        while self.size >= self.limit and not self.dropping:
            self._space.clear()
            await self._space.wait()
        if self.dropping:
            return False
        if not self.items:
            self.oldest = time.monotonic()
        self.items.append(item)
        self.size += len(item)
        # Wake the sender only when it has something new to decide: not once per line.
        if len(self.items) == 1 or self._full_batch():
            self._data.set()
        return True

    def close(self) -> None:
        """No more items will come: the sender takes what is left without lingering."""
        self.closed = True
        self._data.set()

    def drop(self) -> list[bytes]:
        """Stop buffering (the server is gone for good); return what was never sent."""
        self.dropping = True
        left = list(self.items)
        self.items.clear()
        self.size = 0
        self._space.set()
        return left

    async def take(self, linger: float) -> list[bytes]:
        """The next batch; empty only once the buffer is closed and drained."""
        while not self.items and not self.closed:
            self._data.clear()
            await self._data.wait()
        while self.items and not self.closed and not self._full_batch():
            assert self.oldest is not None
            remaining = self.oldest + linger - time.monotonic()
            if remaining <= 0:
                break
            self._data.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._data.wait()
            except TimeoutError:
                break
        batch: list[bytes] = []
        size = 0
        while self.items and len(batch) < self.max_events:
            if batch and size + len(self.items[0]) > self.max_bytes:
                break
            item = self.items.popleft()
            batch.append(item)
            size += len(item)
        self.size -= size
        if not self.items:
            self.oldest = None  # else the rest has waited already: send it at once
        self._space.set()
        return batch


class Uploader:
    """Appends batches to one job, each exactly once and in order."""

    def __init__(self, client: Client, job_id: str, next_index: int) -> None:
        self.client = client
        self.job_id = job_id
        self.next_index = next_index

    async def append(self, items: list[bytes], *, closing: bool | None = None) -> None:
        """Store ``items`` at the next index; ``closing`` is the success of a last ``complete``."""
        expected = self.next_index
        body = b'{"events":[' + b",".join(items) + b"]}"
        response = await self.client.request(
            "POST",
            f"/jobs/{self.job_id}/events",
            content=body,
            params={"expected_index": expected},
            accept=frozenset({409}),
        )
        if response.status_code != 409:
            self.next_index = int(response.json()["last_index"]) + 1
            return
        conflict = response.json()
        actual = conflict.get("next_index")
        job = await self.client.get_job(self.job_id)
        status = job["status"]
        if closing is not None:
            wanted = "completed" if closing else "failed"
            landed = status == wanted and actual == expected + len(items)
        else:
            landed = status not in FINAL and actual == expected + len(items)
        if landed:  # an earlier attempt was stored and only its answer was lost
            self.next_index = expected + len(items)
            return
        if status in FINAL:
            raise JobClosed(f"job {self.job_id} is {status}: its log was closed", status=409)
        raise ClientError(
            f"job {self.job_id} has another writer: its next index is {actual}, "
            f"not {expected} (this runner's)",
            status=409,
        )

    async def complete(self, success: bool) -> None:
        await self.append([encode_complete(success)], closing=success)
