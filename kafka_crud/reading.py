"""Reading a topic's log: the records now in it, partition by partition, with one consumer.

Part of :class:`kafka_crud.Kafka` (``kafka.read_log(topic)``, ``kafka.iter_log(topic)``). Both take
the same range, so that a view need not hold a whole topic: ``partitions``, ``from_offset``
(the first offset read), ``to_offset`` (an end offset: records *below* it), ``last`` (the last
N records of each partition, within the offsets) and ``key`` (only that key's records).
"""

from __future__ import annotations

import operator
import time
from collections import deque
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from itertools import islice
from typing import TYPE_CHECKING, Any, NamedTuple

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from .errors import NotReadyError, ValidationError
from .records import LogRecord
from .topics import DEFAULT_TOPIC

if TYPE_CHECKING:
    from .connection import Watermarks

__all__ = ["LogReader", "LogSpan"]

#: Messages taken from the client per call: large batches keep the per-call cost small.
BATCH = 10_000


class LogSpan(NamedTuple):
    """The offsets of one partition a read covers: records at ``start`` <= offset < ``end``."""

    partition: int
    """The partition."""
    start: int
    """The first offset read (records may be missing there: compaction leaves gaps)."""
    end: int
    """The offset after the last one read (an end offset; at most ``high``)."""
    low: int
    """The partition's log start offset when the read began."""
    high: int
    """The partition's end offset (high watermark) when the read began."""


class LogReader:
    """The log reads of :class:`~kafka_crud.Kafka`."""

    timeout: float

    if TYPE_CHECKING:  # provided by Kafka
        def consumer(self, **overrides: object) -> Consumer: ...
        def errors(self, doing: str) -> Any: ...
        def watermarks(self, topic: str) -> dict[int, Watermarks]: ...

    def read_log(
        self, topic: str = DEFAULT_TOPIC, *, timeout: float = 60.0, partitions: Collection[int] | None = None,
        from_offset: int | None = None, to_offset: int | None = None, last: int | None = None,
        key: str | bytes | None = None,
    ) -> list[LogRecord]:
        """Every record now in ``topic`` (or in the range given), partition by partition, oldest first.

        Reads up to the end offsets taken when called; records written meanwhile are left out.
        ``partitions`` (default: all), ``from_offset`` (default: each partition's start),
        ``to_offset`` (exclusive: records below it), ``last`` (only the last N records of each
        partition, within those offsets) and ``key`` (only records with this key; with ``last``,
        the last N records of that key in each partition) narrow it.
        A list holds every record: for a large topic, iterate :meth:`iter_log` or summarize.
        """
        return list(self.iter_log(topic, timeout=timeout, partitions=partitions, from_offset=from_offset,
                                  to_offset=to_offset, last=last, key=key))

    def iter_log(
        self, topic: str = DEFAULT_TOPIC, *, timeout: float = 60.0, partitions: Collection[int] | None = None,
        from_offset: int | None = None, to_offset: int | None = None, last: int | None = None,
        key: str | bytes | None = None,
    ) -> Iterator[LogRecord]:
        """:meth:`read_log`, one record at a time, with one consumer: memory stays small."""
        wanted = key.encode() if isinstance(key, str) else key
        # With a key, ``last`` counts that key's records: the whole range is read for them.
        spans = self.log_spans(topic, partitions=partitions, from_offset=from_offset, to_offset=to_offset,
                               last=None if wanted is not None else last, timeout=timeout)
        with self.log_consumer(topic) as consumer:
            for span in spans:
                batches = (self.log_batches(topic, [span], timeout=timeout, consumer=consumer) if wanted is None
                           else self.key_batches(topic, span, wanted, last=last, timeout=timeout, consumer=consumer))
                partition = span.partition
                msg: Any  # a consumed record has its partition and offset (the stubs say int | None)
                for _, batch in batches:
                    for msg in batch:
                        _, timestamp = msg.timestamp()
                        yield LogRecord(topic, partition, msg.offset(), timestamp, msg.key(), msg.value(),
                                        msg.headers())

    def key_batches(
        self, topic: str, span: LogSpan, key: bytes, *, last: int | None = None, timeout: float = 60.0,
        consumer: Consumer | None = None,
    ) -> Iterator[tuple[LogSpan, list[Message]]]:
        """:meth:`log_batches` of one span, only ``key``'s records (with ``last``: its last N, held until the end)."""
        kept: deque[Message] | None = deque(maxlen=last) if last is not None else None
        for _, batch in self.log_batches(topic, [span], timeout=timeout, consumer=consumer):
            mine = [m for m in batch if m.key() == key]
            if kept is not None:
                kept.extend(mine)
            elif mine:
                yield span, mine
        if kept:
            yield span, list(kept)

    def log_spans(
        self, topic: str = DEFAULT_TOPIC, *, partitions: Collection[int] | None = None,
        from_offset: int | None = None, to_offset: int | None = None, last: int | None = None,
        timeout: float = 60.0,
    ) -> list[LogSpan]:
        """The offsets a read of this range covers, per partition, from the watermarks now.

        ``last`` needs reading: compaction leaves gaps, so the last N records may start well
        before ``end - N``. The tail is read in windows that double until N records are found.
        """
        for name, value in (("from_offset", from_offset), ("to_offset", to_offset)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValidationError(f"{name} must be an offset (an integer >= 0), not {value!r}")
        if last is not None and (isinstance(last, bool) or not isinstance(last, int) or last < 1):
            raise ValidationError(f"last must be a number of records (an integer >= 1), not {last!r}")
        marks = self.watermarks(topic)
        chosen = sorted(marks) if partitions is None else sorted(set(partitions))
        unknown = [p for p in chosen if p not in marks]
        if unknown:
            raise ValidationError(
                f"Topic {topic!r} has partitions {', '.join(map(str, marks))}: no partition "
                f"{', '.join(map(str, unknown))}"
            )
        spans = []
        for p in chosen:
            low, high = marks[p]
            start = max(low, from_offset or 0)
            end = high if to_offset is None else min(high, to_offset)
            spans.append(LogSpan(p, start, max(start, end), low, high))
        if last is None:
            return spans
        with self.log_consumer(topic) as consumer:
            return [span._replace(start=self._start_of_last(topic, span, last, timeout, consumer)) for span in spans]

    def _start_of_last(self, topic: str, span: LogSpan, count: int, timeout: float, consumer: Consumer) -> int:
        found: list[Any] = []  # the offsets of the newest records found so far, at most count
        stop, window = span.end, count
        while stop > span.start:
            window_start = max(span.start, stop - window)
            piece = LogSpan(span.partition, window_start, stop, span.low, span.high)
            offsets = [m.offset() for _, batch in self.log_batches(topic, [piece], timeout=timeout, consumer=consumer)
                       for m in batch]
            found = (offsets + found)[-count:]
            if len(found) >= count:
                return int(found[0])
            stop, window = window_start, window * 2
        return span.start

    @contextmanager
    def log_consumer(self, topic: str) -> Iterator[Consumer]:
        """A consumer for :meth:`log_batches`, to reuse over several reads of ``topic`` (closed after)."""
        consumer = self.consumer(**{
            # Short fetch waits: a partition at its end answers at once, not after librdkafka's 500 ms.
            "fetch.wait.max.ms": 10,
            # librdkafka pauses fetching for fetch.queue.backoff.ms (1 s) once its queue is full;
            # a reader that drains the queue quickly would wait most of that (docs/benchmarks.md).
            "fetch.queue.backoff.ms": 20,
            # A start below the log start offset (removed meanwhile) reads from the start, never the end.
            "auto.offset.reset": "earliest",
        })
        try:
            # Without the topic's metadata at hand, the first fetch waits ~0.5 s for librdkafka to ask.
            with self.errors(f"reading the metadata of {topic!r}"):
                consumer.list_topics(topic, timeout=self.timeout)
            yield consumer
        finally:
            consumer.close()

    def log_batches(
        self, topic: str, spans: list[LogSpan], *, timeout: float = 60.0, consumer: Consumer | None = None,
    ) -> Iterator[tuple[LogSpan, list[Message]]]:
        """The raw messages of each span, in batches, each offset once and in order.

        For the kit's own fast paths (a view that formats thousands of records a second): the
        messages are confluent-kafka's, without errors or end-of-partition events, each batch
        with the span object it belongs to. While a batch is being used, the cyclic GC is held
        off (see :func:`kafka_crud.consumer.gc_paused`). ``consumer``: one from
        :meth:`log_consumer`, else one is opened for this read.
        """
        pending = [span for span in spans if span.end > span.start]
        if not pending:
            return
        if consumer is None:
            with self.log_consumer(topic) as own:
                yield from self.log_batches(topic, pending, timeout=timeout, consumer=own)
            return
        deadline = time.monotonic() + timeout
        for span in pending:
            start = OFFSET_BEGINNING if span.start <= span.low else span.start
            with self.errors(f"reading {topic!r}"):
                consumer.assign([TopicPartition(topic, span.partition, start)])
            for batch in self._read_span(consumer, topic, span, deadline, timeout):
                yield span, batch
            # What is still queued for this assignment (an end-of-partition event, records beyond
            # the span) must not reach the next read, which may be of the same partition.
            with self.errors(f"reading {topic!r}"):
                consumer.unassign()
                while consumer.consume(num_messages=BATCH, timeout=0):
                    pass

    def _read_span(
        self, consumer: Consumer, topic: str, span: LogSpan, deadline: float, timeout: float,
    ) -> Iterator[list[Message]]:
        # After a leader change the client may fetch again from before what it already delivered
        # (it re-validates its position with the new leader): each offset is yielded once, in order.
        from .consumer import gc_paused  # here: the consumer module imports the connection, which imports this

        partition, end = span.partition, span.end
        last = span.start - 1
        # The collector is held off for the whole read, between batches too: each consume() creates
        # 10,000 tracked messages, and with it on, the collector's full passes over every object
        # of the process cost a sixth of a scan's CPU (21 passes per million records). A read
        # makes no reference cycles; the collector runs again when it ends.
        with gc_paused():
            while True:
                if time.monotonic() > deadline:
                    raise NotReadyError(
                        f"Reading {topic!r} did not reach offset {end} of partition {partition} "
                        f"within {timeout:.0f} s: is the broker healthy?"
                    )
                with self.errors(f"reading {topic!r}"):
                    batch = consumer.consume(num_messages=BATCH, timeout=0.05)
                if not batch:
                    continue
                done = False
                # (An error event's offset may be None: errors are ruled out before offsets compare.)
                offsets: list[Any] = [] if any(map(Message.error, batch)) else list(map(Message.offset, batch))
                if (offsets and offsets[0] > last and offsets[-1] < end
                        and set(map(Message.partition, batch)) == {partition}
                        and all(map(operator.lt, offsets, islice(offsets, 1, None)))):
                    # The usual batch: records of this partition, in order, all new and in range.
                    last = offsets[-1]
                    yield batch
                else:
                    good, last, done = self._sift(batch, topic, partition, last, end)
                    if good:
                        yield good
                if done or last + 1 >= end:
                    return

    def _sift(self, batch: list[Message], topic: str, partition: int, last: int,
              end: int) -> tuple[list[Message], int, bool]:
        """The records of ``batch`` to yield, the last offset then, and whether the end was reached."""
        good: list[Message] = []
        msg: Any  # a consumed record has its partition and offset (the stubs say int | None)
        for msg in batch:
            err = msg.error()
            if msg.partition() != partition:
                continue  # fetched for the previous assignment
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    with self.errors(f"reading {topic!r}"):
                        raise KafkaException(err)
                if msg.offset() >= end:
                    return good, last, True
                continue
            offset = msg.offset()
            if offset <= last:
                continue
            if offset >= end:
                return good, last, True
            last = offset
            good.append(msg)
        return good, last, False
