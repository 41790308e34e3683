"""The partitioned design: instances of a consumer group, each holding only its partitions' users.

The article's part 3 splits the users between instances with a consumer group. The group
coordinator hands each member some partitions (with the classic protocol the group's leader
member computes the assignment and the coordinator relays it), so each instance rebuilds only
the users whose keys hash to its partitions, and a request for another user must be routed to
the instance that owns it. That is the design of Kafka Streams' KTable with interactive
queries; :class:`kafka_crud.StoreConsumer`, which assigns itself every partition, is the
replicated design (a GlobalKTable).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from . import running
from .connection import DEFAULT_TOPIC, Kafka, KafkaLike
from .errors import NotReadyError, kafka_error
from .store import StoredUser, UserStore

__all__ = ["GroupStoreConsumer", "start_group", "stop_all"]

log = logging.getLogger(__name__)


class GroupStoreConsumer:
    """One instance of the partitioned design: it rebuilds only the users of its partitions.

    It *subscribes* to the topic with a ``group.id``. The group splits the partitions between
    its members, so each instance rebuilds only the users whose keys hash to its partitions and,
    asked directly, answers "no such user" for the others: a request must go to the owner.
    :class:`kafka_crud.StoreConsumer` *assigns* itself every partition and belongs to no group.

    On every rebalance the instance starts a fresh store from the beginning of the partitions it
    was given (it commits no offsets), so what it knows is exactly its share.

    ``name`` is also the member's ``group.instance.id`` (static membership). With the range
    assignor, members are ordered by that id: two instances named ``A`` and ``B`` on three
    partitions always get [0, 1] and [2]. A static member leaves no LeaveGroup on close: the
    group hands its partitions on only after ``session.timeout.ms``.
    """

    def __init__(
        self,
        name: str,
        kafka: KafkaLike = None,
        *,
        topic: str = DEFAULT_TOPIC,
        group_id: str,
    ) -> None:
        self.name = name
        self.topic = topic
        self.group_id = group_id
        self.kafka = Kafka.of(kafka)
        self._lock = threading.Lock()
        self._store = UserStore(topic)
        self._assignment: list[int] = []
        self._at_end: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        """The exception that ended the consumer thread, if any."""

    @property
    def store(self) -> UserStore:
        """The users this instance knows: those of its partitions only."""
        with self._lock:
            return self._store

    @property
    def assignment(self) -> list[int]:
        """The partitions the group gave this instance."""
        with self._lock:
            return list(self._assignment)

    @property
    def caught_up(self) -> bool:
        """True once every partition of the current assignment has been read to its end."""
        with self._lock:
            return bool(self._assignment) and self._at_end >= set(self._assignment)

    def get(self, email: str) -> StoredUser | None:
        """What this instance's ``GET /user?email=`` would answer: the user, or None (a 404)."""
        return self.store.get(email)

    def start(self) -> GroupStoreConsumer:
        consumer = Consumer(self.kafka.client_config(**{
            "group.id": self.group_id,
            "group.instance.id": self.name,
            "group.protocol": "classic",
            "partition.assignment.strategy": "range",
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 500,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 100,
        }))
        consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        self._thread = threading.Thread(
            target=self._run, args=(consumer,), name=f"kafka-crud-group-{self.name}", daemon=True
        )
        self._thread.start()
        running.track(self, servers=self.kafka.bootstrap_servers, topic=self.topic)
        return self

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with self._lock:
            self._store = UserStore(self.topic)
            self._assignment = sorted(tp.partition for tp in partitions)
            self._at_end = set()
        consumer.assign([TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with self._lock:
            self._assignment = []
            self._at_end = set()

    def _run(self, consumer: Consumer) -> None:
        try:
            while not self._stop.is_set():
                msg: Any = consumer.poll(0.1)  # a consumed record has its partition and offset
                if msg is None:
                    continue
                err = msg.error()
                if err is None:
                    self.store.apply_batch(msg.partition(), [(msg.key(), msg.value(), msg.offset())])
                elif err.code() == KafkaError._PARTITION_EOF:
                    self.store.advance(msg.partition(), msg.offset())
                    with self._lock:
                        self._at_end.add(msg.partition())
                elif err.fatal():
                    raise kafka_error(err, f"reading {self.topic!r}", self.kafka.bootstrap_servers)
                else:
                    log.warning("Group consumer %s: %s", self.name, err.str())
        except BaseException as exc:
            self.error = exc
            log.exception("Group consumer %s stopped", self.name)
        finally:
            consumer.close()

    def stop(self) -> None:
        running.untrack(self)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> GroupStoreConsumer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<GroupStoreConsumer {self.name} partitions={self.assignment} users={len(self.store)}>"


def start_group(
    names: Sequence[str] = ("A", "B"),
    kafka: KafkaLike = None,
    *,
    topic: str = DEFAULT_TOPIC,
    timeout: float = 60.0,
) -> list[GroupStoreConsumer]:
    """Start one :class:`GroupStoreConsumer` per name in a new consumer group; return them settled.

    Settled: the group's assignment covers every partition exactly once, every instance has
    partitions, and every instance has read its partitions to their end.
    """
    kafka = Kafka.of(kafka)
    partitions = len(kafka.require_partitions(topic))
    group_id = f"user-service-{uuid.uuid4().hex[:8]}"
    instances = [GroupStoreConsumer(n, kafka, topic=topic, group_id=group_id) for n in names]
    for instance in instances:
        instance.start()
    deadline = time.monotonic() + timeout
    try:
        while True:
            failed = [i for i in instances if i.error is not None]
            if failed:
                raise NotReadyError(f"Instance {failed[0].name} failed: {failed[0].error}")
            owned = [p for i in instances for p in i.assignment]
            if (
                sorted(owned) == list(range(partitions))
                and all(i.assignment or len(instances) > partitions for i in instances)
                and all(i.caught_up or not i.assignment for i in instances)
            ):
                return instances
            if time.monotonic() > deadline:
                raise NotReadyError(
                    f"The consumer group did not settle within {timeout:.0f} s: "
                    + ", ".join(f"{i.name} has {i.assignment}" for i in instances)
                )
            time.sleep(0.1)
    except BaseException:
        stop_all(instances)
        raise


def stop_all(things: Iterable[Any]) -> None:
    """Stop every consumer, service or server handle given (anything with ``stop()``)."""
    for thing in things:
        thing.stop()
