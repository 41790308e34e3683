"""The user service: the article's CRUD on a compacted topic, without its bugs.

It owns a producer, a store and the consumer that fills it. Writes are acknowledged by Kafka
*and* applied to this instance's store before they return, so a read after a write on the
same instance sees it. Conditional writes (``if_match``) are checked and written under a
per-key lock, so two writers on one instance cannot both win.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Callable
from types import TracebackType

from . import running
from .connection import DEFAULT_PARTITIONS, DEFAULT_TOPIC, Kafka, KafkaLike
from .consumer import Progress, StoreConsumer
from .errors import NotReadyError, PreconditionFailedError
from .producer import UserProducer
from .records import Position, User, validate_email
from .store import StoredUser, UserStore

__all__ = ["UserService"]

log = logging.getLogger(__name__)

_LOCK_STRIPES = 64


class UserService:
    """CRUD on users stored in a compacted Kafka topic.

    Args:
        kafka: the :class:`~kafka_crud.Kafka` connection (or an address; None: the environment's).
        topic: the compacted topic; created with ``partitions`` partitions if missing.
        write_timeout: seconds a write may take to be acknowledged and applied.
        on_progress: called with a :class:`~kafka_crud.consumer.Progress` during the rebuild.
        read_your_writes: wait until this instance's store has applied a write before returning
            it. False is the article's behaviour, kept to show its stale reads.
        paused: start with the consumer paused (see :meth:`StoreConsumer.pause`), for demos.
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
    ) -> None:
        self.kafka = Kafka.of(kafka)
        self.read_your_writes = read_your_writes
        self._paused = paused
        self.topic = topic
        self.partitions = partitions
        self.write_timeout = write_timeout
        self.store = UserStore(topic)
        self._on_progress = on_progress
        self._consumer: StoreConsumer | None = None
        self._producer: UserProducer | None = None
        self._locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]

    def start(self) -> UserService:
        """Create the topic if needed, start rebuilding the store; returns before it is caught up."""
        self.kafka.ensure_topic(self.topic, partitions=self.partitions)
        self._producer = UserProducer(self.kafka, topic=self.topic, timeout=self.write_timeout)
        self._consumer = StoreConsumer(
            self.store, self.kafka, on_progress=self._on_progress, paused=self._paused
        ).start()
        running.track(self, servers=self.kafka.bootstrap_servers, topic=self.topic)
        return self

    def stop(self) -> None:
        running.untrack(self)
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

    # -- operations --------------------------------------------------------------------------
    def get(self, email: str) -> StoredUser | None:
        """The user, or None. Raises :class:`NotReadyError` before the store has caught up."""
        self._require_ready()
        return self.store.get(validate_email(email))

    def users(self) -> list[StoredUser]:
        self._require_ready()
        return self.store.users()

    def _lock(self, email: str) -> threading.Lock:
        return self._locks[zlib.crc32(email.encode("utf-8", "surrogatepass")) % _LOCK_STRIPES]

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

    def _write(self, write: Callable[[UserProducer], Position]) -> Position:
        if self._producer is None:
            raise NotReadyError("The service is not started: call start()")
        started = time.monotonic()
        position = write(self._producer)
        # Acknowledged by Kafka; now wait until our own consumer has applied it (read-your-writes),
        # within what is left of the write timeout (a moment at least: applying takes milliseconds).
        if self.read_your_writes:
            left = self.write_timeout - (time.monotonic() - started)
            self.store.wait_for(position, max(left, 0.5))
        return position

    def put(self, user: User, *, if_match: str | None = None) -> tuple[StoredUser, bool]:
        """Write a new version of ``user``; returns it as stored and whether it was created."""
        self._require_ready()
        with self._lock(user.email):
            previous = self._check(user.email, if_match)
            position = self._write(lambda p: p.put(user))
        return StoredUser(user, position), previous is None

    def delete(self, email: str, *, if_match: str | None = None) -> Position | None:
        """Write a tombstone for ``email``; returns its position, or None if there was no such user."""
        self._require_ready()
        validate_email(email)
        with self._lock(email):
            if self._check(email, if_match) is None:
                return None
            return self._write(lambda p: p.delete(email))
