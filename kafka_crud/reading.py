"""Reading a topic's log: every record now in it, partition by partition, with one consumer.

Part of :class:`kafka_crud.Kafka` (``kafka.read_log(topic)``, ``kafka.iter_log(topic)``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from .errors import NotReadyError
from .records import LogRecord
from .topics import DEFAULT_TOPIC

if TYPE_CHECKING:
    from .connection import Watermarks

__all__ = ["LogReader"]


class LogReader:
    """The log reads of :class:`~kafka_crud.Kafka`."""

    timeout: float

    if TYPE_CHECKING:  # provided by Kafka
        def consumer(self, **overrides: object) -> Consumer: ...
        def errors(self, doing: str) -> Any: ...
        def watermarks(self, topic: str) -> dict[int, Watermarks]: ...

    def read_log(self, topic: str = DEFAULT_TOPIC, *, timeout: float = 60.0) -> list[LogRecord]:
        """Every record now in ``topic``, partition by partition, oldest first.

        Reads up to the end offsets taken when called; records written meanwhile are left out.
        """
        return list(self.iter_log(topic, timeout=timeout))

    def iter_log(self, topic: str = DEFAULT_TOPIC, *, timeout: float = 60.0) -> Iterator[LogRecord]:
        """:meth:`read_log`, one record at a time, partition by partition, with one consumer."""
        targets = self.watermarks(topic)
        pending = [(p, high) for p, (low, high) in targets.items() if high > low]
        if not pending:
            return
        # Short fetch waits: a partition at its end answers at once, not after librdkafka's 500 ms.
        consumer = self.consumer(**{"fetch.wait.max.ms": 10})
        try:
            # Without the topic's metadata at hand, the first fetch waits ~0.5 s for librdkafka to ask.
            with self.errors(f"reading the metadata of {topic!r}"):
                consumer.list_topics(topic, timeout=self.timeout)
            deadline = time.monotonic() + timeout
            for partition, end in pending:
                consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
                yield from self._read_partition(consumer, topic, partition, end, deadline, timeout)
        finally:
            consumer.close()

    def _read_partition(
        self, consumer: Consumer, topic: str, partition: int, end: int, deadline: float, timeout: float,
    ) -> Iterator[LogRecord]:
        # After a leader change the client may fetch again from before what it already delivered
        # (it re-validates its position with the new leader): each offset is yielded once, in order.
        last = -1
        while True:
            if time.monotonic() > deadline:
                raise NotReadyError(
                    f"Reading {topic!r} did not reach the end offset {end} of partition {partition} "
                    f"within {timeout:.0f} s: is the broker healthy?"
                )
            with self.errors(f"reading {topic!r}"):
                batch = consumer.consume(num_messages=10_000, timeout=0.05)
            msg: Any  # a consumed record has its partition and offset (the stubs say int | None)
            for msg in batch:
                if msg.partition() != partition:
                    continue  # fetched for the previous assignment
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        with self.errors(f"reading {topic!r}"):
                            raise KafkaException(err)
                    if msg.offset() >= end:
                        return
                    continue
                offset = msg.offset()
                if offset >= end:
                    return
                if offset <= last:
                    continue
                last = offset
                _, timestamp = msg.timestamp()
                yield LogRecord(topic, partition, offset, timestamp, msg.key(), msg.value(), msg.headers())
                if offset + 1 >= end:
                    return
