"""What storage refuses before any SQL: values that no backend's columns can hold.

The API validates what clients send, but storage is the last line, and its contract
is the same on every backend: text with a NUL character or a lone surrogate
(PostgreSQL's ``text`` refuses the first, no UTF-8 column holds the second) is a
422 naming the field, and a lookup by such a value finds nothing, instead of one
backend storing it and the other answering "database unavailable".
"""

from __future__ import annotations

from ..core.errors import Unprocessable
from ..core.models import INT64, UNSTORABLE


def storable(field: str, value: str | None) -> None:
    """Refuse text no column can hold."""
    if value is not None and UNSTORABLE.search(value):
        raise Unprocessable(f"{field} holds a NUL character or a lone surrogate", field=field)


def findable(*values: str | None) -> bool:
    """Whether a lookup by these values could find anything at all."""
    return not any(v is not None and UNSTORABLE.search(v) for v in values)


def position(value: int) -> int:
    """An index or count as a database integer holds it (64 bits, clamped)."""
    return max(INT64.start, min(INT64.stop - 1, value))
