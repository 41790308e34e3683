"""A whole topic summarized without holding its records: per partition, what is really there.

:func:`~kafka_crud.views.watermarks_frame` counts the records a :meth:`read_log
<kafka_crud.Kafka.read_log>` returned, so it needs them all in memory. :func:`summarize` reads
each partition once and keeps, per key, only what its latest record is (a value, a tombstone or
a roll marker of the kit): memory grows with one partition's keys, not with the records. The
counts are the same as ``watermarks_frame``'s (see there for what each means), and
``records`` = ``live_keys`` + ``superseded`` + ``tombstones`` + ``markers``.
"""

from __future__ import annotations

import operator
from collections.abc import Collection
from dataclasses import asdict, dataclass
from itertools import repeat
from typing import TYPE_CHECKING, Any

from confluent_kafka import Message

from .scan import is_marker
from .topics import DEFAULT_TOPIC

if TYPE_CHECKING:
    import pandas as pd
    from confluent_kafka import Consumer

    from .connection import KafkaLike
    from .reading import LogReader, LogSpan

__all__ = ["PartitionSummary", "summarize", "summary_frame"]

_VALUE, _TOMBSTONE, _MARKER = 0, 1, 2  # what a key's latest record is


@dataclass(frozen=True, slots=True)
class PartitionSummary:
    """One partition of a topic: its watermarks and what its records are now."""

    partition: int
    """The partition."""
    low: int
    """The log start offset (compaction does not move it)."""
    high: int
    """The end offset (high watermark) when the summary began: the offset after the last record read."""
    records: int
    """Records in the log below ``high`` (compaction leaves gaps: often fewer than ``high - low``)."""
    live_keys: int
    """Records that are the current value of their key (and records without a key and with a value)."""
    superseded: int
    """Records with a later record of the same key: compaction may remove them."""
    tombstones: int
    """Latest-of-their-key records with a null value (and keyless null records)."""
    markers: int
    """The kit's own roll markers (:mod:`kafka_crud.rolling`)."""

    @property
    def high_minus_low(self) -> int:
        """What Kafka UIs show as the partition's "messages": offsets, not records."""
        return self.high - self.low


def summarize(kafka: KafkaLike = None, topic: str = DEFAULT_TOPIC, *, partitions: Collection[int] | None = None,
              timeout: float = 60.0) -> list[PartitionSummary]:
    """Per partition (in order): watermarks, records, live keys, superseded records, tombstones, markers.

    One pass over each partition up to the end offset taken when called; records written
    meanwhile are left out.
    """
    from .connection import Kafka

    reader = Kafka.of(kafka)
    result = []
    spans = reader.log_spans(topic, partitions=partitions, timeout=timeout)
    with reader.log_consumer(topic) as consumer:
        for span in spans:
            result.append(_summarize(reader, topic, span, timeout, consumer))
    return result


def _summarize(reader: LogReader, topic: str, span: LogSpan, timeout: float, consumer: Consumer) -> PartitionSummary:
    latest: dict[Any, int] = {}  # key -> what its latest record is: _VALUE (or False), _TOMBSTONE (True), _MARKER
    records = markers = keyless_live = keyless_dead = 0
    msg: Any
    for _, batch in reader.log_batches(topic, [span], timeout=timeout, consumer=consumer):
        records += len(batch)
        keys = list(map(Message.key, batch))
        if None not in keys and not any(map(Message.headers, batch)):
            # The usual batch: keyed records, no headers (so no markers): is the value null?
            latest.update(zip(keys, map(operator.is_, map(Message.value, batch), repeat(None)), strict=True))
            continue
        for key, msg in zip(keys, batch, strict=True):
            what = _VALUE if msg.value() is not None else _TOMBSTONE
            if is_marker(msg.headers()):
                markers += 1
                what = _MARKER
            if key is not None:
                latest[key] = what
            elif what == _VALUE:
                keyless_live += 1
            elif what == _TOMBSTONE:
                keyless_dead += 1
    ends = list(latest.values())
    live = ends.count(_VALUE) + keyless_live  # False == _VALUE, True == _TOMBSTONE
    tombstones = ends.count(_TOMBSTONE) + keyless_dead
    return PartitionSummary(span.partition, span.low, span.high, records, live,
                            records - markers - live - tombstones, tombstones, markers)


def summary_frame(kafka: KafkaLike = None, topic: str = DEFAULT_TOPIC, *,
                  partitions: Collection[int] | None = None, timeout: float = 60.0) -> pd.DataFrame:
    """:func:`summarize` as a DataFrame with the columns of :data:`~kafka_crud.views.WATERMARK_COLUMNS`."""
    import pandas as pd

    from .views import WATERMARK_COLUMNS

    rows = [{**asdict(s), "high_minus_low": s.high_minus_low}
            for s in summarize(kafka, topic, partitions=partitions, timeout=timeout)]
    return pd.DataFrame(rows, columns=list(WATERMARK_COLUMNS)).astype("int64")
