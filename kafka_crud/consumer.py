"""Rebuilding the store: read every partition of the topic from the beginning, then follow it.

Every instance reads every partition by *assignment*, not through a consumer group: each holds
the whole table (the replicated design; Kafka Streams calls it a GlobalKTable). The partitioned
design, where a group splits the users between instances, is
:class:`kafka_crud.group_consumer.GroupStoreConsumer`.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from . import running
from .connection import Kafka, KafkaLike, Watermarks
from .errors import NotReadyError, kafka_error
from .idempotency import outcome_from_headers
from .records import Position
from .store import UserStore

__all__ = ["Progress", "StoreConsumer", "apply_messages", "gc_paused"]

log = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class Progress:
    """How far a rebuild has got."""

    applied: int
    """Offsets applied so far, summed over partitions (including compaction gaps)."""
    total: int
    """Offsets to apply to be caught up: the end offset minus where reading started (the log start
    offset, or a snapshot's offset), summed over partitions."""
    elapsed: float
    """Seconds since the rebuild started."""

    @property
    def fraction(self) -> float:
        return 1.0 if self.total == 0 else min(1.0, self.applied / self.total)


_gc_lock = threading.Lock()
_gc_holders = 0
_gc_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """Hold the cyclic garbage collector off while one batch of records is applied.

    A batch is thousands of messages alive at once: the collector promotes them to its oldest
    generation, which then triggers full passes over everything, the growing store included.
    A million-user rebuild paid for 28 such passes, more CPU than the rebuild itself. A batch
    makes no reference cycles and takes milliseconds; the collector runs again right after.
    Counted, so consumers in several threads of one process restore the collector correctly.
    """
    global _gc_holders, _gc_was_enabled
    with _gc_lock:
        if _gc_holders == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_holders += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_holders -= 1
            if _gc_holders == 0 and _gc_was_enabled:
                gc.enable()


def apply_messages(store: UserStore, messages: list[Message], servers: str = "") -> set[int]:
    """Apply consumed messages to ``store``; return the partitions that hit their end.

    An end-of-partition event (which carries the end offset) advances the applied offset past a
    compaction gap at the tail. Idempotency keys in record headers are indexed before the
    records' offsets count as applied, so a wait for a position sees the key too.
    """
    last, special = store.apply_messages(messages)
    at_end: set[int] = set()
    # Any: a consumed record always has its partition and offset (the stubs say int | None).
    msg: Any
    for msg in special:
        err = msg.error()
        if err is None:
            found = outcome_from_headers(msg.headers(), Position(store.topic, msg.partition(), msg.offset()),
                                         msg.timestamp()[1])
            if found is not None:
                store.idempotency.remember(*found)
        elif err.code() == KafkaError._PARTITION_EOF:
            at_end.add(msg.partition())
            # The event's offset is the end offset: everything before it is applied.
            last[msg.partition()] = max(last.get(msg.partition(), -1), msg.offset() - 1)
        elif err.fatal():
            raise kafka_error(err, f"reading {store.topic!r}", servers)
        else:
            log.warning("Consumer: %s", err.str())
    for partition, offset in last.items():
        store.advance(partition, offset + 1)
    return at_end


class StoreConsumer:
    """Keeps a :class:`UserStore` up to date with the topic, in a background thread.

    Ready means caught up: for every partition, everything before the end offset taken at
    start has been applied. Compaction leaves gaps in offsets, so progress is measured in
    offsets, and the end-of-partition event (which carries the end offset) closes a gap at
    the tail.

    ``paused=True`` starts it paused: it assigns the partitions but applies nothing until
    :meth:`resume` (an instance still rebuilding, for demos).

    ``start_offsets`` ({partition: offset}, from a snapshot the store was loaded with: see
    :mod:`kafka_crud.snapshot`) starts those partitions there instead of at the beginning.
    """

    def __init__(
        self,
        store: UserStore,
        kafka: KafkaLike = None,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        progress_interval: float = 1.0,
        paused: bool = False,
        start_offsets: Mapping[int, int] | None = None,
    ) -> None:
        self.store = store
        self._start_offsets = dict(start_offsets or {})
        self.topic = store.topic
        self.kafka = Kafka.of(kafka)
        self._on_progress = on_progress
        self._progress_interval = progress_interval
        self._ready = threading.Event()
        self._stop = threading.Event()
        # pause(): the thread parks at the top of its loop and applies nothing until resume().
        self._paused = threading.Event()
        self._parked = threading.Event()
        if paused:
            self._paused.set()
        self._thread: threading.Thread | None = None
        self._targets: dict[int, Watermarks] = {}
        self._started = 0.0
        self.error: BaseException | None = None
        """The exception that ended the consumer thread, if any."""

    def start(self) -> StoreConsumer:
        """Take the end offsets, assign every partition from the beginning (or its start offset), start consuming."""
        self._targets = self.kafka.watermarks(self.topic)
        starts = self._start_offsets
        consumer = self.kafka.consumer(**{
            # From a snapshot's offsets: an offset no longer in the log is an error, never a silent
            # jump to the end (librdkafka's default, "latest", would skip the records in between).
            **({"auto.offset.reset": "error"} if starts else {}),
            "fetch.wait.max.ms": 100,
            # librdkafka stops fetching once queued.min.messages (100,000) wait in its queue, then
            # checks again after fetch.queue.backoff.ms, 1 s by default: a rebuild drains the queue
            # in a fraction of that and sat idle for the rest. (A larger queue instead costs
            # ~250 MB per million messages queued: each costs far more than its payload.)
            "fetch.queue.backoff.ms": 20,
        })
        try:
            with self.kafka.errors(f"assigning the partitions of {self.topic!r}"):
                # Learn the leaders first: a partition assigned before this client has metadata
                # finds no leader, and librdkafka retries its offset query on a 500 ms timer (its
                # debug log: "no current leader for partition"). Half a second of every start.
                consumer.list_topics(self.topic, timeout=self.kafka.timeout)
                consumer.assign([TopicPartition(self.topic, p, starts.get(p, OFFSET_BEGINNING)) for p in self._targets])
        except BaseException:
            consumer.close()
            raise
        self._started = time.monotonic()
        for partition, (low, high) in self._targets.items():
            if high == low:
                self.store.advance(partition, high)
        self._check_ready()
        self._thread = threading.Thread(target=self._run, args=(consumer,), name="kafka-crud-consumer", daemon=True)
        self._thread.start()
        running.track(self, servers=self.kafka.bootstrap_servers, topic=self.topic)
        return self

    @property
    def ready(self) -> bool:
        """True once the store has caught up with the end offsets taken at start."""
        return self._ready.is_set()

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until caught up; raise :class:`NotReadyError` after ``timeout`` seconds."""
        if not self._ready.wait(timeout):
            progress = self.progress()
            raise NotReadyError(
                f"Not caught up after {timeout} s: {progress.applied} of {progress.total} offsets applied"
                + (f" (the consumer failed: {self.error})" if self.error else "")
            )

    def progress(self) -> Progress:
        applied = self.store.applied()
        first = {p: max(low, self._start_offsets.get(p, low)) for p, (low, _) in self._targets.items()}
        done = sum(min(applied.get(p, first[p]), high) - first[p] for p, (_, high) in self._targets.items())
        total = sum(max(high - first[p], 0) for p, (_, high) in self._targets.items())
        return Progress(max(done, 0), total, time.monotonic() - self._started)

    def _check_ready(self) -> None:
        if self._ready.is_set():
            return
        applied = self.store.applied()
        if all(applied.get(p, 0) >= high for p, (_, high) in self._targets.items()):
            self._ready.set()
            progress = self.progress()
            log.info("Caught up with %r: %d offsets in %.2f s", self.topic, progress.total, progress.elapsed)
            if self._on_progress:
                self._on_progress(progress)

    def _run(self, consumer: Consumer) -> None:
        last_report = time.monotonic()
        try:
            while not self._stop.is_set():
                if self._paused.is_set():
                    self._parked.set()
                    self._stop.wait(0.05)
                    continue
                self._parked.clear()
                # consume() with a timeout waits for the whole batch or the whole timeout: wait for
                # one message, then take what is already fetched, so a write is applied at once.
                first = consumer.poll(0.1)
                if first is not None:
                    with gc_paused():
                        self._apply(consumer, first)
                if not self._ready.is_set():
                    self._check_ready()
                    now = time.monotonic()
                    if self._on_progress and not self._ready.is_set() and now - last_report >= self._progress_interval:
                        last_report = now
                        self._on_progress(self.progress())
        except BaseException as exc:
            self.error = exc
            log.exception("The store consumer stopped")
        finally:
            consumer.close()

    def _apply(self, consumer: Consumer, first: Message) -> None:
        """Apply ``first`` and every message already fetched after it (up to 10,000)."""
        apply_messages(self.store, [first, *consumer.consume(num_messages=10_000, timeout=0)],
                       self.kafka.bootstrap_servers)

    @property
    def paused(self) -> bool:
        """True between :meth:`pause` and :meth:`resume` (or from the start with ``paused=True``)."""
        return self._paused.is_set()

    def pause(self, timeout: float = 30.0) -> None:
        """Stop applying records until :meth:`resume`: a slow consumer, made deterministic for demos.

        Returns once the thread has finished the batch in hand: no record written after this
        returns is applied while paused. Records keep arriving in Kafka; the store falls behind.
        """
        self._parked.clear()
        self._paused.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and not self._parked.wait(timeout):
            raise NotReadyError(f"The consumer did not pause within {timeout:.0f} s")

    def resume(self) -> None:
        """Apply records again, starting with those that arrived while paused."""
        self._paused.clear()

    def stop(self) -> None:
        running.untrack(self)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> StoreConsumer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
