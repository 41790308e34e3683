"""The in-memory state rebuilt from the topic: the latest version of every user.

The store holds values as the bytes read from Kafka and decodes a user only when asked: a
rebuild of a million records then costs a dictionary insert per record, not a JSON parse.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from .errors import NotReadyError
from .idempotency import IdempotencyIndex
from .positions import reached
from .records import LogRecord, Position, User

__all__ = ["UserStore", "StoredUser"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoredUser:
    """A user as the store holds it."""

    user: User
    """The decoded user."""
    position: Position
    """Where its latest version is in the log; its ETag."""


class UserStore:
    """The latest record of every key, applied in log order, with the applied position per partition.

    A record with a null value (tombstone) removes its key. A value that is not a JSON user
    (an empty value, say) also makes the key absent, and is counted in :attr:`invalid`.
    The ``Idempotency-Key`` of records that carry one are in :attr:`idempotency`.
    """

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self._values: dict[bytes, tuple[bytes, int, int]] = {}
        self._applied: dict[int, int] = {}
        self._changed = threading.Condition()
        # wait_for's writers, per partition: a heap of (offset, ticket, lock held until applied).
        # Each is woken alone when its offset is applied, not with every batch: with 8 concurrent
        # writers, waking them all for every batch cost more CPU than the batches.
        self._waiting: dict[int, list[tuple[int, int, threading.Lock]]] = {}
        self._tickets = itertools.count()
        self.invalid: dict[bytes, Position] = {}
        """Keys whose latest record is not a JSON user, with where that record is."""
        self.idempotency = IdempotencyIndex()
        """The idempotency keys of the records applied (and of this instance's own writes)."""

    # -- applying ------------------------------------------------------------------------
    def apply_batch(self, partition: int, records: Iterable[tuple[bytes | None, bytes | None, int]]) -> None:
        """Apply (key, value, offset) records of one partition, in offset order."""
        values = self._values
        last = -1
        for key, value, offset in records:
            last = offset
            if key is None:
                continue
            if value is None:
                values.pop(key, None)
                self.invalid.pop(key, None)
            elif value[:1] == b"{":
                values[key] = (value, partition, offset)
                if self.invalid:
                    self.invalid.pop(key, None)
            else:
                values.pop(key, None)
                self.invalid[key] = Position(self.topic, partition, offset)
        if last >= 0:
            self.advance(partition, last + 1)

    def apply(self, record: LogRecord) -> None:
        """Apply one record."""
        self.apply_batch(record.partition, [(record.key, record.value, record.offset)])

    def advance(self, partition: int, next_offset: int) -> None:
        """Record that everything before ``next_offset`` in ``partition`` has been applied."""
        with self._changed:
            if next_offset > self._applied.get(partition, 0):
                self._applied[partition] = next_offset
                self._changed.notify_all()
                waiting = self._waiting.get(partition)
                while waiting and waiting[0][0] < next_offset:
                    heapq.heappop(waiting)[2].release()

    def drop_partition(self, partition: int) -> None:
        """Forget every user, key and applied offset of ``partition`` (it moved to another instance).

        Call it from the thread that applies records, so that no batch of it is being applied.
        """
        for key in [k for k, (_, p, _) in self._values.items() if p == partition]:
            self._values.pop(key, None)
        for key in [k for k, position in self.invalid.items() if position.partition == partition]:
            self.invalid.pop(key, None)
        self.idempotency.drop_partition(partition)
        with self._changed:
            self._applied.pop(partition, None)
            self._changed.notify_all()

    def wake(self) -> None:
        """Wake every :meth:`wait_until`, to check its condition again (something else changed)."""
        with self._changed:
            self._changed.notify_all()

    # -- reading -------------------------------------------------------------------------
    def get(self, email: str) -> StoredUser | None:
        """The user with this email, or None if absent (never written, deleted, or not a valid user)."""
        key = email.encode("utf-8", "surrogatepass")
        entry = self._values.get(key)
        if entry is None:
            return None
        stored = self._decode(key, entry)
        return stored

    def _decode(self, key: bytes, entry: tuple[bytes, int, int]) -> StoredUser | None:
        value, partition, offset = entry
        try:
            user = User.from_dict(json.loads(value), email=key.decode())
        except (ValueError, UnicodeDecodeError):
            log.warning("Record %s-%d has a value that is not a user: %r", key, offset, value[:80])
            return None
        return StoredUser(user, Position(self.topic, partition, offset))

    def users(self) -> list[StoredUser]:
        """Every user, sorted by email."""
        entries = sorted(self._values.items())
        return [s for key, entry in entries if (s := self._decode(key, entry)) is not None]

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, email: object) -> bool:
        return isinstance(email, str) and email.encode() in self._values

    def applied(self) -> dict[int, int]:
        """Per partition, the next offset to apply (everything before it is applied), by partition."""
        with self._changed:
            return dict(sorted(self._applied.items()))

    def wait_until(self, done: Callable[[dict[int, int]], bool], timeout: float) -> bool:
        """Block until ``done(applied)`` is true, re-checked after every batch applied; False after ``timeout`` s.

        ``applied`` is the next offset to apply per partition; ``done`` runs under the store's lock
        and must be quick (it may read users: :meth:`get` takes no lock).
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while not done(self._applied):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    def reached(self, positions: Mapping[int, int], timeout: float = 0.0) -> bool:
        """Whether every one of ``positions`` ({partition: offset}) is applied, waiting up to ``timeout`` s."""
        return self.wait_until(lambda applied: reached(positions, applied), timeout)

    def wait_for(self, position: Position, timeout: float) -> None:
        """Block until the record at ``position`` has been applied (read-your-writes).

        Raises :class:`NotReadyError` after ``timeout`` seconds. Only the batch that applies
        ``position`` wakes this thread.
        """
        partition, offset = position.partition, position.offset
        with self._changed:
            if self._applied.get(partition, 0) > offset:
                return
            entry = (offset, next(self._tickets), threading.Lock())
            entry[2].acquire()
            heapq.heappush(self._waiting.setdefault(partition, []), entry)
        if entry[2].acquire(timeout=max(timeout, 0.0)):
            return
        with self._changed:
            waiting = self._waiting.get(partition, [])
            if entry in waiting:  # else applied between the timeout and here
                waiting.remove(entry)
                heapq.heapify(waiting)
                raise NotReadyError(
                    f"The store did not apply {position.topic}-{partition}@{offset} "
                    f"within {timeout:.1f} s: the consumer is behind or not running"
                )
