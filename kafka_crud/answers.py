"""What the service answers: a read's result and a write's, before HTTP turns them into responses."""

from __future__ import annotations

from dataclasses import dataclass

from .positions import Positions
from .records import Position, User
from .store import StoredUser

__all__ = ["Read", "Written"]


@dataclass(frozen=True, slots=True)
class Read:
    """What a read found: the user (None: absent), and whether the client's copy is still current."""

    stored: StoredUser | None
    """The user as the store holds it, or None."""
    not_modified: bool = False
    """True when ``If-None-Match`` still matches: the answer is 304."""
    applied: Positions | None = None
    """The positions this instance had applied when it answered (``Kafka-Position``)."""


@dataclass(frozen=True, slots=True)
class Written:
    """What a PUT or DELETE answered: its status, and where its record is."""

    status: int
    """201 created, 200 updated, 204 deleted; 404 for a DELETE of nobody (nothing written)."""
    position: Position | None
    """Where the record is (None when nothing was written)."""
    user: User | None = None
    """The user written (None for a DELETE)."""
    replayed: bool = False
    """True when this answers a retry with the same ``Idempotency-Key``: nothing was written."""
