"""Rolling a segment: how records become cleanable, and the kit's roll markers.

The log cleaner works only on a partition's *inactive* segments: the active segment, the one
appends go to, is never cleaned. A segment stops being active when it *rolls*, and it rolls
only on an append: the first append after ``segment.ms`` has passed since the segment's first
record (or once it is full: ``segment.bytes``, at least 1 MiB since Kafka 4.0, KIP-1030). On a
compacted topic ``max.compaction.lag.ms``, when set, also shortens the roll: a segment then
rolls on the first append after ``min(segment.ms, max.compaction.lag.ms)`` (Kafka's
``LogConfig.maxSegmentMs``). A quiet partition never rolls, so its superseded records stay
for as long as nothing is appended to it.

:func:`rolling` makes the next append roll, at once, the way production does after
``segment.ms``: a lesson does its next real write inside it. Where no real write lands in a
partition that holds something to clean, :func:`roll_segments` appends a **roll marker**: a
tombstone whose key hashes (murmur2, like every producer of the kit) to the partition it is
written to, so that a key still lives in one partition only, and which carries the record
header ``kafka-crud-marker: roll``. A marker deletes nothing: no user has its key. Each
partition has one marker key, so a new marker supersedes the previous one and the cleaner
removes it in its turn. Every view of the kit hides markers by default and says how many it
hid (:attr:`kafka_crud.LogRecord.is_marker`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager

from confluent_kafka import KafkaError, Message

from .connection import DEFAULT_TOPIC, Kafka, KafkaLike
from .errors import CleanerTimeoutError, WriteError
from .partitioning import partition_for
from .records import MARKER_HEADER, MARKER_ROLL, LogRecord
from .segments import LogDirOption, LogDirs, resolve_log_dirs

__all__ = ["ROLL_SEGMENT_MS", "marker_key", "needs_roll", "roll_segments", "rolling", "topic_overrides"]

log = logging.getLogger(__name__)

#: ``segment.ms`` while rolling: the next append after this many ms starts a new segment.
ROLL_SEGMENT_MS = 100


def marker_key(partition: int, partitions: int) -> str:
    """The roll marker's key for ``partition``: the first ``__kafka_crud_roll_<n>__`` that hashes there."""
    n = 0
    while partition_for(f"__kafka_crud_roll_{n}__", partitions) != partition:
        n += 1
    return f"__kafka_crud_roll_{n}__"


@contextmanager
def topic_overrides(
    kafka: KafkaLike, topic: str, settings: Mapping[str, str], *, force: bool = False,
) -> Iterator[None]:
    """Set topic ``settings`` for the duration of the block, then put back what was there.

    A setting the topic had of its own gets its old value back; one it inherited from the broker
    loses the override again. Returns once the broker reports the new values. Only on a topic
    of the kit's (see :mod:`kafka_crud.topics`), or with ``force``.
    """
    kafka = Kafka.of(kafka)
    kafka.require_owned(topic, "re-configure", force=force)
    own = kafka.own_topic_config(topic)
    previous = {name: own.get(name) for name in settings}
    kafka.alter_topic_config(topic, dict(settings), force=True)
    try:
        yield
    finally:
        kafka.alter_topic_config(topic, previous, force=True)


@contextmanager
def rolling(kafka: KafkaLike, topic: str = DEFAULT_TOPIC, *, force: bool = False) -> Iterator[None]:
    """Within the block, the next append to each partition of ``topic`` rolls its segment.

    Sets ``segment.ms`` to :data:`ROLL_SEGMENT_MS` and waits past it, as if the topic's real
    ``segment.ms`` had passed; restores it after. The record that rolls a segment is the first
    of the new active segment; everything before it becomes cleanable.
    """
    with topic_overrides(kafka, topic, {"segment.ms": str(ROLL_SEGMENT_MS)}, force=force):
        time.sleep(2 * ROLL_SEGMENT_MS / 1000)
        yield


def needs_roll(records: Iterable[LogRecord]) -> list[int]:
    """Partitions whose latest record is not a roll marker: something was appended since the last roll."""
    latest: dict[int, LogRecord] = {}
    for record in records:
        if record.partition not in latest or record.offset > latest[record.partition].offset:
            latest[record.partition] = record
    return sorted(p for p, record in latest.items() if not record.is_marker)


def _append_markers(kafka: Kafka, topic: str, partitions: Iterable[int], count: int, timeout: float) -> dict[int, int]:
    """Append one roll marker to each partition (by key hash, like any producer); return their offsets."""
    producer = kafka.producer(**{"linger.ms": 0, "message.timeout.ms": int(timeout * 1000)})
    offsets: dict[int, int] = {}
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(err)
            return
        offset, partition = msg.offset(), msg.partition()
        assert offset is not None
        assert partition is not None
        offsets[partition] = offset

    wanted = sorted(set(partitions))
    for partition in wanted:
        producer.produce(
            topic, key=marker_key(partition, count), value=None, headers=[(MARKER_HEADER, MARKER_ROLL)],
            on_delivery=on_delivery,
        )
    producer.flush(timeout + 5)
    if errors:
        raise WriteError(f"Kafka did not acknowledge a roll marker: {errors[0].str()}")
    if len(offsets) != len(wanted):
        raise WriteError(f"No acknowledgement for a roll marker within {timeout:.0f} s: is the broker reachable?")
    if sorted(offsets) != wanted:  # the partitioner and marker_key disagree: a bug, not a broker's fault
        raise WriteError(f"Roll markers landed in partitions {sorted(offsets)}, not {wanted}")
    return offsets


def _rolled(root: LogDirs | None, topic: str, starts: Mapping[int, int]) -> set[int]:
    """Partitions whose every local copy has a segment starting at the given offset (all, without log dirs)."""
    if root is None:
        return set(starts)
    return {p for p, offset in starts.items() if root.has_segment(topic, p, offset)}


def roll_segments(
    kafka: KafkaLike = None,
    topic: str = DEFAULT_TOPIC,
    *,
    partitions: Iterable[int] | None = None,
    write: Callable[[], object] | None = None,
    timeout: float = 30.0,
    log_dir: LogDirOption = "auto",
    force: bool = False,
) -> dict[int, int]:
    """Roll the active segment of each partition that needs it, with a real write where there is one.

    ``write``: the lesson's next real writes, run inside :func:`rolling`; a partition they append
    to rolls on its first new record. Each of ``partitions`` (by default those whose latest
    record is not a marker, :func:`needs_roll`) that no write rolled gets a roll marker. With the
    log dir at hand (the embedded broker) every roll is checked on disk, and a partition the
    broker had not yet rolled gets a marker too.

    Returns, per partition rolled (in partition order), the new active segment's base offset.
    """
    kafka = Kafka.of(kafka)
    kafka.require_owned(topic, "roll", force=force)
    root = resolve_log_dirs(log_dir, kafka)
    count = len(kafka.require_partitions(topic))
    wanted = set(needs_roll(kafka.iter_log(topic)) if partitions is None else partitions)
    starts: dict[int, int] = {}
    deadline = time.monotonic() + timeout
    with rolling(kafka, topic, force=True):
        if write is not None:
            before = kafka.watermarks(topic)
            write()
            after = kafka.watermarks(topic)
            written = {p: before[p].high for p in after if after[p].high > before[p].high}
            starts.update({p: offset for p, offset in written.items() if p in _rolled(root, topic, written)})
            wanted |= set(written)
        pending = sorted(wanted - set(starts))
        while pending:
            appended = _append_markers(kafka, topic, pending, count, timeout)
            starts.update(appended)
            pending = sorted(set(appended) - _rolled(root, topic, appended))
            if pending and time.monotonic() > deadline:
                raise CleanerTimeoutError(
                    f"Partitions {pending} of {topic!r} did not roll within {timeout:.0f} s: is the broker healthy?"
                )
            if pending:
                time.sleep(2 * ROLL_SEGMENT_MS / 1000)
    starts = dict(sorted(starts.items()))
    log.info("Rolled %r: new active segments at %s", topic, starts)
    return starts
