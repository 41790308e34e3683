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
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import NotReadyError
from .idempotency import IdempotencyIndex, Outcome
from .positions import reached
from .records import LogRecord, Position, User
from .table import Entry, SortedTable

__all__ = ["MergedUsers", "StoreState", "UserStore", "StoredUser", "sorted_users"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoredUser:
    """A user as the store holds it."""

    user: User
    """The decoded user."""
    position: Position
    """Where its latest version is in the log; its ETag."""


@dataclass(frozen=True, slots=True)
class StoreState:
    """Everything a store holds, for a snapshot (:mod:`kafka_crud.snapshot`)."""

    applied: dict[int, int]
    """Per partition, the next offset to apply: the state holds at least every record before it."""
    values: dict[bytes, Entry] | SortedTable | MergedUsers
    """Per key, its latest JSON value with the partition and offset of its record."""
    invalid: dict[bytes, tuple[int, int]]
    """Keys whose latest record is not a JSON user: the partition and offset of that record."""
    outcomes: list[tuple[str, Outcome]]
    """The idempotency keys known, oldest first."""


class MergedUsers:
    """The users of a store that started from a snapshot's table: the table, and the changes above it."""

    def __init__(self, base: SortedTable, changes: dict[bytes, Entry | None]) -> None:
        self.base = base
        self.changes = changes
        """Per key changed since the table, its entry, or None: deleted (or not a user) since."""

    def get(self, key: bytes) -> Entry | None:
        entry = self.changes.get(key, _UNCHANGED)
        return self.base.get(key) if entry is _UNCHANGED else entry  # type: ignore[return-value]

    def __len__(self) -> int:
        base = self.base
        return len(base) + sum((entry is not None) - (key in base) for key, entry in self.changes.items())

    def __iter__(self) -> Iterator[bytes]:
        return (key for key, _ in self.items())

    def items(self) -> Iterator[tuple[bytes, Entry]]:
        """Every (key, entry), in key order: the table's and the changes', merged in one pass."""
        changes = sorted(self.changes.items())
        i = 0
        for key, entry in self.base.items():
            while i < len(changes) and changes[i][0] < key:
                if (changed := changes[i][1]) is not None:
                    yield changes[i][0], changed
                i += 1
            if i < len(changes) and changes[i][0] == key:
                if (changed := changes[i][1]) is not None:
                    yield key, changed
                i += 1
            else:
                yield key, entry
        for key, changed in changes[i:]:
            if changed is not None:
                yield key, changed


_UNCHANGED = object()


def sorted_users(values: dict[bytes, Entry] | SortedTable | MergedUsers) -> Iterator[tuple[bytes, Entry]]:
    """Every (key, entry) of ``values``, in key order."""
    return iter(sorted(values.items())) if isinstance(values, dict) else values.items()


class UserStore:
    """The latest record of every key, applied in log order, with the applied position per partition.

    A record with a null value (tombstone) removes its key. A value that is not a JSON user
    (an empty value, say) also makes the key absent, and is counted in :attr:`invalid`.
    The ``Idempotency-Key`` of records that carry one are in :attr:`idempotency`.
    """

    def __init__(self, topic: str) -> None:
        self.topic = topic
        # Every user; or, once started from a snapshot's table (``_base``), the changes above it,
        # None for a key deleted since: the restart then builds no object per user of the table.
        self._values: dict[bytes, Entry | None] = {}
        self._base: SortedTable | None = None
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
        remove = values.pop if self._base is None else self._shadow
        last = -1
        for key, value, offset in records:
            last = offset
            if key is None:
                continue
            if value is None:
                remove(key, None)
                self.invalid.pop(key, None)
            elif value[:1] == b"{":
                values[key] = (value, partition, offset)
                if self.invalid:
                    self.invalid.pop(key, None)
            else:
                remove(key, None)
                self.invalid[key] = Position(self.topic, partition, offset)
        if last >= 0:
            self.advance(partition, last + 1)

    def apply_messages(self, messages: Iterable[Any]) -> tuple[dict[int, int], list[Any]]:
        """Apply consumed records, as :meth:`apply_batch` would, without advancing the applied offsets.

        ``messages`` are confluent-kafka ``Message`` objects, in the order consumed (partitions
        interleaved, each in offset order). Returns the last offset seen per partition, and the
        messages the caller must handle: events (``error()`` set; never applied) and records
        that carry headers (applied here, their headers are the caller's). The caller then
        advances each partition with :meth:`advance`.

        This loop runs for every record of a rebuild, so it is written for speed: one pass, the
        message's accessors called once each, no per-record tuple except the one stored.
        """
        values = self._values
        remove = values.pop if self._base is None else self._shadow
        invalid = self.invalid
        last: dict[int, int] = {}
        special: list[Any] = []
        for msg in messages:
            if msg.error() is not None:
                special.append(msg)
                continue
            partition = msg.partition()
            offset = msg.offset()
            last[partition] = offset
            key = msg.key()
            if key is not None:
                value = msg.value()
                if value is None:
                    remove(key, None)
                    invalid.pop(key, None)
                elif value[:1] == b"{":
                    values[key] = (value, partition, offset)
                    if invalid:
                        invalid.pop(key, None)
                else:
                    remove(key, None)
                    invalid[key] = Position(self.topic, partition, offset)
            if msg.headers():
                special.append(msg)
        return last, special

    def _shadow(self, key: bytes, _: None = None) -> None:
        """Remove ``key`` when the store has a table under it: mark it gone in the changes."""
        self._values[key] = None

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
        Only for a store that did not start from a snapshot's table (the partitioned design,
        which keeps no snapshots).
        """
        if self._base is not None:
            raise RuntimeError("drop_partition() on a store started from a snapshot: it holds every partition")
        for key in [k for k, entry in self._values.items() if entry is not None and entry[1] == partition]:
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

    # -- snapshots ---------------------------------------------------------------------------
    def export_state(self) -> StoreState:
        """A copy of the store's state, for a snapshot; any thread may call it while records are applied.

        The applied offsets are read first, the users after them: a batch applied in between
        leaves records past those offsets in the copy, and applying the tail again from them
        redoes those records in log order, which leaves the same state. Each dict is copied in
        one step (in CPython, ``dict.copy`` runs under the GIL), so none holds half a record.
        """
        applied = self.applied()
        base, changes = self._base, self._values.copy()
        values = MergedUsers(base, changes) if base is not None else self._users(changes)
        invalid = {key: (p.partition, p.offset) for key, p in self.invalid.copy().items()}
        return StoreState(applied, values, invalid, self.idempotency.outcomes())

    def load_state(self, state: StoreState) -> None:
        """Start from ``state`` (a snapshot's): call it on an empty store, before any record is applied."""
        if self._values or self._applied or self._base is not None:
            raise RuntimeError("load_state() needs an empty store, before its consumer starts")
        if isinstance(state.values, SortedTable):
            self._base = state.values
        elif isinstance(state.values, MergedUsers):
            self._base, self._values = state.values.base, dict(state.values.changes)
        else:
            self._values = dict(state.values)
        self.invalid = {key: Position(self.topic, p, o) for key, (p, o) in state.invalid.items()}
        for key, outcome in state.outcomes:
            self.idempotency.remember(key, outcome)
        for partition, next_offset in state.applied.items():
            self.advance(partition, next_offset)

    # -- reading -------------------------------------------------------------------------
    def get(self, email: str) -> StoredUser | None:
        """The user with this email, or None if absent (never written, deleted, or not a valid user)."""
        key = email.encode("utf-8", "surrogatepass")
        entry = self._entry(key)
        return None if entry is None else self._decode(key, entry)

    def _entry(self, key: bytes) -> Entry | None:
        entry = self._values.get(key, _UNCHANGED)
        if entry is _UNCHANGED:
            return self._base.get(key) if self._base is not None else None
        return entry  # type: ignore[return-value]

    @staticmethod
    def _users(values: dict[bytes, Entry | None]) -> dict[bytes, Entry]:
        # Without a table under it, the store never holds None: removing a key pops it.
        return values  # type: ignore[return-value]

    def _all(self) -> dict[bytes, Entry] | MergedUsers:
        base = self._base
        return self._users(self._values) if base is None else MergedUsers(base, self._values.copy())

    def _decode(self, key: bytes, entry: Entry) -> StoredUser | None:
        value, partition, offset = entry
        try:
            user = User.from_dict(json.loads(value), email=key.decode())
        except (ValueError, UnicodeDecodeError):
            log.warning("Record %s-%d has a value that is not a user: %r", key, offset, value[:80])
            return None
        return StoredUser(user, Position(self.topic, partition, offset))

    def users(self) -> list[StoredUser]:
        """Every user, sorted by email."""
        return [s for key, entry in sorted_users(self._all()) if (s := self._decode(key, entry)) is not None]

    def __len__(self) -> int:
        return len(self._all())

    def __contains__(self, email: object) -> bool:
        return isinstance(email, str) and self._entry(email.encode("utf-8", "surrogatepass")) is not None

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
