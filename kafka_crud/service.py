"""The user service: the article's CRUD on a compacted topic, without its bugs.

It owns a producer, a store and the consumer that fills it. Writes are acknowledged by Kafka
*and* applied to this instance's store before they return, so a read after a write on the
same instance sees it; a read on another instance sees it when it carries the write's position
(``min_positions``, the ``Kafka-Min-Position`` header). Conditional writes (``if_match``) are
checked and written one at a time per key: a write of a user waits (on a condition, holding no
lock) until the previous write of that user on this instance has been applied, so two writers on
one instance cannot both win. Writes with an idempotency key are carried out once
(:mod:`kafka_crud.idempotency`).

Data flows one way: a request is validated, produced, acknowledged by Kafka, consumed into the
store, and answered from the store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from http import HTTPStatus
from types import TracebackType

from . import running
from .answers import Read, Written
from .connection import DEFAULT_PARTITIONS, DEFAULT_TOPIC, Kafka, KafkaLike
from .consumer import Progress, StoreConsumer
from .errors import NotReadyError, PreconditionFailedError
from .idempotency import Outcome, fingerprint, record_headers
from .partitioning import partition_for
from .positions import Positions, applied_positions, format_positions
from .producer import UserProducer
from .records import Position, User, validate_email
from .state_dir import StateDir, StatePath, start_consumer
from .store import StoredUser, UserStore

__all__ = ["Read", "UserService", "Written"]

log = logging.getLogger(__name__)


class UserService:
    """CRUD on users stored in a compacted Kafka topic.

    Args:
        kafka: the :class:`~kafka_crud.Kafka` connection (or an address; None: the environment's).
        topic: the compacted topic; created with ``partitions`` partitions if missing.
        write_timeout: seconds a write may take to be acknowledged and applied.
        on_progress: called with a :class:`~kafka_crud.consumer.Progress` during the rebuild.
        read_your_writes: wait until this instance's store has applied a write before returning
            it, and answer a read with ``min_positions`` only once they are applied. False is the
            article's behaviour (no wait, ``Kafka-Min-Position`` ignored), kept to show its stale reads.
        paused: start with the consumer paused (see :meth:`StoreConsumer.pause`), for demos.
        state_dir: keep a snapshot of the store there, and restart from it (:mod:`kafka_crud.state_dir`).
    """

    def __init__(
        self,
        kafka: KafkaLike = None,
        *,
        topic: str = DEFAULT_TOPIC,
        partitions: int = DEFAULT_PARTITIONS,
        write_timeout: float = 5.0,
        on_progress: Callable[[Progress], None] | None = None,
        read_your_writes: bool = True,
        paused: bool = False,
        state_dir: StatePath = None,
    ) -> None:
        self.kafka = Kafka.of(kafka)
        self.state_dir = StateDir.of(state_dir)
        self.read_your_writes = read_your_writes
        self._paused = paused
        self.topic = topic
        self.partitions = partitions
        self.write_timeout = write_timeout
        self.store = UserStore(topic)
        self._on_progress = on_progress
        self._consumer: StoreConsumer | None = None
        self._producer: UserProducer | None = None
        # The users with a write in flight on this instance (partition by email), and a condition
        # to wait on until one is done: a lock is never held across a round trip to Kafka.
        self._writing: dict[str, int] = {}
        self._producing = 0
        self._writes_done = threading.Condition()
        self.partition_count = partitions
        """The topic's partition count (the existing topic's, once started)."""
        self.url: str | None = None
        """Where this instance's HTTP endpoint answers, once serving (set by serve_in_thread)."""

    def start(self) -> UserService:
        """Create the topic if needed, start rebuilding the store; returns before it is caught up."""
        self.partition_count = self.kafka.ensure_topic(self.topic, partitions=self.partitions)
        self._producer = UserProducer(self.kafka, topic=self.topic, timeout=self.write_timeout)
        self._consumer = start_consumer(self.store, self.kafka, self.state_dir, on_progress=self._on_progress,
                                        paused=self._paused)
        running.track(self, servers=self.kafka.bootstrap_servers, topic=self.topic)
        return self

    def stop(self) -> None:
        running.untrack(self)
        if self.state_dir:
            self.state_dir.stop()  # a last snapshot, while the consumer still runs
        if self._consumer is not None:
            self._consumer.stop()
        if self._producer is not None:
            self._producer.close()

    def __enter__(self) -> UserService:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- state -----------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """True once the store has caught up with the topic as it was at start."""
        return self._consumer is not None and self._consumer.ready

    @property
    def consumer(self) -> StoreConsumer:
        if self._consumer is None:
            raise NotReadyError("The service is not started: call start()")
        return self._consumer

    def progress(self) -> Progress | None:
        """How far the rebuild has got, or None before :meth:`start`."""
        return self._consumer.progress() if self._consumer is not None else None

    def wait_ready(self, timeout: float | None = None) -> UserService:
        self.consumer.wait_ready(timeout)
        return self

    def wait_caught_up(self, timeout: float = 30.0) -> dict[int, int]:
        """Wait until the store has applied every record now in the topic; return the applied offsets.

        For records written by someone else (another instance, a plain producer): a write through
        this service is applied before it returns.
        """
        deadline = time.monotonic() + timeout
        for partition, (_, end) in self.kafka.watermarks(self.topic).items():
            if end > 0:
                left = max(0.0, deadline - time.monotonic())
                self.store.wait_for(Position(self.topic, partition, end - 1), left)
        return self.store.applied()

    def _require_ready(self) -> None:
        if not self.ready:
            progress = self.consumer.progress()
            raise NotReadyError(
                f"Still rebuilding the state from {self.topic!r}: {progress.applied} of {progress.total} offsets"
            )

    # -- where a key is served: one instance holds every partition (see PartitionedService) ---
    def partition_of(self, email: str) -> int:
        """The partition ``email``'s records go to (murmur2, like Java's producer and the kit's)."""
        return partition_for(email, self.partition_count)

    def route(self, email: str) -> str | None:
        """The URL of the instance that serves ``email``, or None for this one (always, here)."""
        return None

    def route_partition(self, partition: int) -> str | None:
        """The URL of the instance that serves ``partition``, or None for this one (always, here)."""
        return None

    def groupinfo(self) -> dict[str, object]:
        """``GET /groupinfo``: here every partition is served by this instance (no group)."""
        return {"group": None, "topic": self.topic, "state": "Replicated",
                "partitions": {str(p): self.url for p in range(self.partition_count)},
                "instances": {}, "here": {"instance": None, "url": self.url,
                                          "partitions": list(range(self.partition_count))}}

    def holds(self, partition: int) -> bool:
        """Whether this instance serves ``partition`` now (here: every partition, once ready)."""
        return self.ready

    def _require_serving(self, partition: int) -> None:
        """Raise :class:`NotReadyError` unless this instance may answer for ``partition`` now."""
        self._require_ready()

    def _accepting_writes(self, partition: int) -> None:
        """Raise unless a write to ``partition`` may start now (a group instance refuses during a rebalance)."""

    # -- reads -------------------------------------------------------------------------------
    def get(self, email: str) -> StoredUser | None:
        """The user, or None. Raises :class:`NotReadyError` before the store has caught up."""
        return self.read(email).stored

    def users(self) -> list[StoredUser]:
        self._require_ready()
        return self.store.users()

    def list_users(
        self, *, partition: int | None = None, min_positions: Mapping[int, int] | None = None,
        wait: float | None = None,
    ) -> tuple[list[dict[str, str]], Positions]:
        """``GET /users``: every user (of ``partition`` only, when given), sorted by email, once
        ``min_positions`` are applied; and the positions applied, read before the users.
        """
        self._require_ready()
        if partition is not None:
            self._require_serving(partition)
        self.await_positions(min_positions, self.write_timeout if wait is None else wait)
        applied = self._applied()
        if partition is not None:
            applied = {p: o for p, o in applied.items() if p == partition}
        users = [s.user.to_dict() for s in self.store.users() if partition is None or s.position.partition == partition]
        return users, applied

    def await_positions(self, positions: Mapping[int, int] | None, timeout: float) -> None:
        """Return once the store has applied ``positions`` (of the partitions it holds); 503 after ``timeout`` s.

        With ``read_your_writes=False`` (the article's behaviour) positions are ignored.
        """
        if not positions or not self.read_your_writes:
            return
        wanted = {p: o for p, o in positions.items() if self.holds(p)}
        if wanted and not self.store.reached(wanted, max(timeout, 0.0)):
            behind = {p: o for p, o in wanted.items() if self.store.applied().get(p, 0) <= o}
            has = format_positions(applied_positions(self.store.applied())) or "nothing yet"
            raise NotReadyError(
                f"This instance has not applied {format_positions(behind)} of {self.topic!r} within {timeout:.1f} s "
                f"(it has applied {has}): retry, or send Prefer: wait=N to wait longer"
            )

    def read(
        self, email: str, *, min_positions: Mapping[int, int] | None = None, wait: float | None = None,
        if_none_match: frozenset[str] | None = None,
    ) -> Read:
        """``GET /user``: the user, once ``min_positions`` are applied; 304-or-wait with ``if_none_match``.

        ``wait``: seconds for the whole read (``Prefer: wait=N``); None waits for positions up to
        the write timeout and answers a matching ``if_none_match`` at once. With ``wait``, a user
        whose ETag is in ``if_none_match`` (``*``: any) is answered as soon as it changes, else
        as not modified once ``wait`` is over.
        """
        validate_email(email)
        partition = self.partition_of(email)
        self._require_serving(partition)
        started = time.monotonic()
        self.await_positions(min_positions, self.write_timeout if wait is None else wait)
        current = self.store.get(email)
        if if_none_match is None or not _matches(current, if_none_match):
            return Read(current, applied=self._applied())
        left = 0.0 if wait is None else wait - (time.monotonic() - started)
        if left > 0:
            key = email
            self.store.wait_until(lambda _: not _matches(self.store.get(key), if_none_match), left)
            self._require_serving(partition)  # the partition may have moved meanwhile
            current = self.store.get(email)
            if not _matches(current, if_none_match):
                return Read(current, applied=self._applied())
        return Read(current, not_modified=True, applied=self._applied())

    def _applied(self) -> Positions:
        return {p: n - 1 for p, n in self.store.applied().items() if n > 0 and self.holds(p)}

    # -- writes --------------------------------------------------------------------------------
    def put(self, user: User, *, if_match: str | None = None) -> tuple[StoredUser, bool]:
        """Write a new version of ``user``; returns it as stored and whether it was created."""
        written = self.put_request(user, if_match=if_match)
        assert written.position is not None
        return StoredUser(user, written.position), written.status == HTTPStatus.CREATED

    def delete(self, email: str, *, if_match: str | None = None) -> Position | None:
        """Write a tombstone for ``email``; returns its position, or None if there was no such user."""
        return self.delete_request(email, if_match=if_match).position

    def put_request(self, user: User, *, if_match: str | None = None, idempotency_key: str | None = None) -> Written:
        """``PUT /user``: write ``user`` (201 created, 200 updated), at most once per idempotency key."""
        value = user.to_json()
        fp = fingerprint("PUT", user.email, value, if_match) if idempotency_key is not None else ""

        def attempt(key: str | None, partition: int) -> Written:
            started = time.monotonic()
            with self._one_writer(user.email, partition):
                status = HTTPStatus.OK if self._check(user.email, if_match) else HTTPStatus.CREATED
                headers = record_headers(key, fp, status) if key else None
                position = self._produce(partition, lambda p: p.send(user.email, value, headers=headers),
                                         key, fp, status)
                self._await_applied(position, started)
            return Written(status, position, user)

        return self._once(idempotency_key, fp, user.email, attempt, user)

    def delete_request(self, email: str, *, if_match: str | None = None, idempotency_key: str | None = None) -> Written:
        """``DELETE /user``: write a tombstone (204), or nothing for a user who is absent (404)."""
        validate_email(email)
        fp = fingerprint("DELETE", email, None, if_match) if idempotency_key is not None else ""

        def attempt(key: str | None, partition: int) -> Written:
            started = time.monotonic()
            with self._one_writer(email, partition):
                if self._check(email, if_match) is None:
                    return Written(HTTPStatus.NOT_FOUND, None)
                headers = record_headers(key, fp, HTTPStatus.NO_CONTENT) if key else None
                position = self._produce(partition, lambda p: p.send(email, None, headers=headers),
                                         key, fp, HTTPStatus.NO_CONTENT)
                self._await_applied(position, started)
            return Written(HTTPStatus.NO_CONTENT, position)

        return self._once(idempotency_key, fp, email, attempt, None)

    def _once(
        self, key: str | None, fp: str, email: str, attempt: Callable[[str | None, int], Written],
        user: User | None,
    ) -> Written:
        """Carry out ``attempt``, or with an idempotency key answer a retry as the first was answered."""
        partition = self.partition_of(email)
        self._require_serving(partition)
        if key is None:
            return attempt(None, partition)
        started = time.monotonic()
        index = self.store.idempotency
        with index.in_flight(key, fp):
            outcome = index.check(key, fp)
            if outcome is None:
                # Not known here: the first attempt may have been written through another instance,
                # or here with its answer lost. Catch up with the partition's end before deciding.
                end = self.kafka.end_offsets(self.topic, [partition])[partition]
                if end > 0 and not self.store.reached({partition: end - 1}, self.write_timeout):
                    raise NotReadyError(
                        f"Could not catch up with {self.topic}-{partition} (end offset {end}) within "
                        f"{self.write_timeout:.1f} s to check the Idempotency-Key: nothing was written; retry"
                    )
                outcome = index.check(key, fp)
            if outcome is None:
                return attempt(key, partition)
        self._await_applied(outcome.position, started)
        return Written(outcome.status, outcome.position, user, replayed=True)

    @contextmanager
    def _one_writer(self, email: str, partition: int) -> Iterator[None]:
        """Let one write of ``email`` (of ``partition``) at a time through. Holds no lock while it runs."""
        deadline = time.monotonic() + self.write_timeout
        with self._writes_done:
            while email in self._writing:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise NotReadyError(f"Another write of {email} is still in flight: nothing was written; retry")
                self._writes_done.wait(left)
            self._require_serving(partition)
            self._accepting_writes(partition)
            self._writing[email] = partition
        try:
            yield
        finally:
            with self._writes_done:
                del self._writing[email]
                self._writes_done.notify_all()

    def _check(self, email: str, if_match: str | None) -> StoredUser | None:
        current = self.store.get(email)
        if if_match is None:
            return current
        tags = {t.strip() for t in if_match.split(",")}
        if current is None or ("*" not in tags and current.position.etag not in tags):
            now = current.position.etag if current else "absent"
            raise PreconditionFailedError(
                f"{email} changed since you read it (If-Match {if_match}, now {now}): GET it again and retry"
            )
        return current

    def _produce(
        self, partition: int, write: Callable[[UserProducer], Position], key: str | None, fp: str, status: int,
    ) -> Position:
        if self._producer is None:
            raise NotReadyError("The service is not started: call start()")
        with self._writes_done:  # checked and counted at once: a rebalance waits for what is counted
            self._accepting_writes(partition)
            self._producing += 1
        try:
            position = write(self._producer)
        finally:
            with self._writes_done:
                self._producing -= 1
                self._writes_done.notify_all()
        if position.partition != partition:
            log.warning("A record of partition %d landed in %d: is the topic's partition count %d?",
                        partition, position.partition, self.partition_count)
        if key is not None:  # known here at once, before the consumer applies it
            self.store.idempotency.remember(key, Outcome(fp, int(status), position, time.time()))
        return position

    def _await_applied(self, position: Position, started: float) -> None:
        # Acknowledged by Kafka; now wait until our own consumer has applied it (read-your-writes),
        # within what is left of the write timeout (a moment at least: applying takes milliseconds).
        if self.read_your_writes:
            left = self.write_timeout - (time.monotonic() - started)
            self.store.wait_for(position, max(left, 0.5))


def _matches(current: StoredUser | None, tags: frozenset[str]) -> bool:
    """Whether ``If-None-Match`` (weak comparison; ``*``: any current user) matches ``current``."""
    return current is not None and ("*" in tags or current.position.etag in tags)
