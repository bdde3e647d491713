"""Idempotent producers: the fencing rule of ``Producer-Id`` / ``-Epoch`` / ``-Seq``.

A producer numbers its appends (``seq``) within a session (``epoch``); the stream
keeps, per producer, the last accepted ``(epoch, seq)``. The check runs inside the
append's transaction, and the new state is written in that same transaction, so
an append and the record that it was accepted commit together: a retry after a
crash (kill -9 between the commit and the answer) is recognised as a duplicate,
never stored twice.

- an epoch below the stored one is a zombie: 403, naming the current epoch;
- a new epoch must start at seq 0 (400 otherwise);
- in the stored epoch, a seq at or below the last accepted is a duplicate: 204,
  nothing stored, naming the highest accepted seq;
- the next seq is accepted; a seq past it is a gap: 409 naming the expected one.

A producer the stream has never seen starts like a new epoch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import BadRequest, Conflict, Forbidden

MAX_NUMBER = 2**53 - 1  # what JavaScript clients can hold exactly
NUMBER = re.compile(r"0|[1-9][0-9]{0,15}")
MAX_PRODUCER_ID = 256
HEADERS = ("Producer-Id", "Producer-Epoch", "Producer-Seq")


@dataclass(frozen=True)
class Claim:
    """What one append says about its producer."""

    producer: str
    epoch: int
    seq: int


@dataclass(frozen=True)
class Position:
    """A producer's last accepted append on one stream."""

    epoch: int
    seq: int


def parse_claim(producer: str | None, epoch: str | None, seq: str | None) -> Claim | None:
    """The three headers together, or none of them (400 otherwise)."""
    given = [value is not None for value in (producer, epoch, seq)]
    if not any(given):
        return None
    if not all(given):
        raise BadRequest(
            "Producer-Id, Producer-Epoch and Producer-Seq go together", field="Producer-Id"
        )
    assert producer is not None and epoch is not None and seq is not None
    if not producer or len(producer) > MAX_PRODUCER_ID or not producer.isprintable():
        raise BadRequest(
            f"Producer-Id must be 1 to {MAX_PRODUCER_ID} printable characters",
            field="Producer-Id",
        )
    return Claim(producer, _number("Producer-Epoch", epoch), _number("Producer-Seq", seq))


def _number(name: str, raw: str) -> int:
    if not NUMBER.fullmatch(raw) or int(raw) > MAX_NUMBER:
        raise BadRequest(f"{name} must be an integer from 0 to 2^53-1", field=name)
    return int(raw)


def check(claim: Claim, stored: Position | None) -> bool:
    """True: accept the append (then store ``Position(claim.epoch, claim.seq)``);
    False: a duplicate, already stored. Raises for a zombie, a bad start or a gap."""
    if stored is not None and claim.epoch < stored.epoch:
        error = Forbidden(
            f"producer epoch {claim.epoch} is stale; the stream is at epoch {stored.epoch}",
            field="Producer-Epoch",
        )
        error.headers["Producer-Epoch"] = str(stored.epoch)
        raise error
    if stored is None or claim.epoch > stored.epoch:
        if claim.seq != 0:
            raise BadRequest(
                f"a new producer epoch starts at Producer-Seq 0, not {claim.seq}",
                field="Producer-Seq",
            )
        return True
    if claim.seq <= stored.seq:
        return False
    if claim.seq > stored.seq + 1:
        gap = Conflict(
            f"Producer-Seq {claim.seq} skips ahead; expected {stored.seq + 1}",
            field="Producer-Seq",
        )
        gap.headers["Producer-Expected-Seq"] = str(stored.seq + 1)
        gap.headers["Producer-Received-Seq"] = str(claim.seq)
        raise gap
    return True
