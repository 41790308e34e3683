"""The log classified as it streams: live, superseded or tombstone, in memory sized by keys.

Whether a record is superseded depends on what comes *after* it: a later record of the same key
in the same partition. :func:`~kafka_crud.records.classify` sees that by holding every record. A
scan reads each partition twice instead: a first pass keeps only the offset of each key's latest
record (a dict as large as the partition's keys, not its records), the second streams the
records and compares. Kafka's log cleaner decides the same way: its offset map holds the latest
offset of each key in the part of the log it cleans, and a record of that key below it is
removed when the cleaner gets to its segment (never in the active segment).

So here ``superseded_by`` is the offset of the key's **latest** record in the partition (where
``classify``, holding the records, names the *next* one). Statuses are those of the partition up
to its end offset when the scan began, even for a range that stops earlier: a record just
below ``to_offset`` is superseded by a later record of its key beyond it.

:func:`log_frame` is :func:`~kafka_crud.views.records_frame` of a range, read and classified
this way, without the records in between. ``kafka-crud log`` writes from :func:`scan_batches`.
"""

from __future__ import annotations

from array import array
from collections.abc import Collection, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from confluent_kafka import Consumer, Message

from .records import MARKER_HEADER, RecordStatus
from .topics import DEFAULT_TOPIC
from .values import shown_all

if TYPE_CHECKING:
    import pandas as pd

    from .connection import KafkaLike
    from .reading import LogReader, LogSpan

__all__ = ["ScanBatch", "is_marker", "log_frame", "scan_batches", "status_of"]


class ScanBatch(NamedTuple):
    """Messages of one partition, in offset order, with what their statuses are read from."""

    partition: int
    """Their partition."""
    messages: list[Message]
    """confluent-kafka messages (key(), value(), offset(), timestamp(), headers())."""
    latest: Mapping[bytes, int]
    """The offset of the latest record of each key of the partition (keys seen from the span's start)."""


def is_marker(headers: Any) -> bool:
    """:attr:`LogRecord.is_marker <kafka_crud.LogRecord.is_marker>` of a consumed message's headers (a list or None)."""
    return headers is not None and any(name == MARKER_HEADER for name, _ in headers)


def status_of(key: bytes | None, offset: int, value: bytes | None,
              latest: Mapping[bytes, int]) -> tuple[RecordStatus, int | None]:
    """A record's status, and the offset of its key's latest record when it is superseded."""
    newest = latest.get(key) if key is not None else None
    if newest is not None and newest != offset:
        return "superseded", newest
    return ("tombstone" if value is None else "live"), None


def scan_batches(
    kafka: KafkaLike, topic: str = DEFAULT_TOPIC, *, partitions: Collection[int] | None = None,
    from_offset: int | None = None, to_offset: int | None = None, last: int | None = None,
    key: str | bytes | None = None, markers: bool = False, timeout: float = 60.0,
) -> Iterator[ScanBatch]:
    """The records of the range, partition by partition, in batches, with their keys' latest offsets.

    The range is that of :meth:`Kafka.read_log <kafka_crud.Kafka.read_log>`. Each partition is
    read twice: from the range's start to the end offset (the latest offset of each key), then
    the range itself. The kit's roll markers are left out unless ``markers``. Memory: one
    partition's keys and one batch of records.
    """
    from .connection import Kafka

    reader: LogReader = Kafka.of(kafka)
    wanted = key.encode() if isinstance(key, str) else key
    spans = reader.log_spans(topic, partitions=partitions, from_offset=from_offset, to_offset=to_offset,
                             last=None if wanted is not None else last, timeout=timeout)
    with reader.log_consumer(topic) as consumer:  # one consumer, one connection, for every pass
        for span in spans:
            if span.end <= span.start:
                continue
            latest = _latest_offsets(reader, topic, span, wanted, timeout, consumer)
            batches = (reader.log_batches(topic, [span], timeout=timeout, consumer=consumer) if wanted is None
                       else reader.key_batches(topic, span, wanted, last=last, timeout=timeout, consumer=consumer))
            for _, batch in batches:
                if not markers and any(map(Message.headers, batch)):
                    batch = [m for m in batch if not is_marker(m.headers())]
                if batch:
                    yield ScanBatch(span.partition, batch, latest)


def _latest_offsets(reader: LogReader, topic: str, span: LogSpan, wanted: bytes | None,
                    timeout: float, consumer: Consumer) -> dict[bytes, int]:
    latest: dict[Any, Any] = {}
    tail = span._replace(end=span.high)  # a later record beyond the range supersedes one in it
    for _, batch in reader.log_batches(topic, [tail], timeout=timeout, consumer=consumer):
        if wanted is None:
            # In offset order: a key's later offset overwrites its earlier one.
            latest.update(zip(map(Message.key, batch), map(Message.offset, batch), strict=True))
        else:
            for msg in batch:
                if msg.key() == wanted:
                    latest[wanted] = msg.offset()
    latest.pop(None, None)  # a record without a key is never superseded
    return latest


def log_frame(
    kafka: KafkaLike = None, topic: str = DEFAULT_TOPIC, *, partitions: Collection[int] | None = None,
    from_offset: int | None = None, to_offset: int | None = None, last: int | None = None,
    key: str | bytes | None = None, timestamps: bool = True, markers: bool = False, timeout: float = 60.0,
) -> pd.DataFrame:
    """A range of the log as :func:`~kafka_crud.views.records_frame` shows it, read and classified by a scan.

    The columns are those of :data:`~kafka_crud.views.LOG_COLUMNS`; ``style_log`` styles it.
    ``superseded_by`` is the offset of the key's latest record (see the module's docstring).
    Keys and values that are not UTF-8 text read as what they are (``binary, 9 bytes: …``,
    ``schema-registry id=7, …``; :mod:`kafka_crud.values`). Only the frame's rows are held:
    ``last=20`` or ``key=...`` look at a topic of millions without reading them into memory.
    """
    import numpy as np
    import pandas as pd

    from .views import LOG_COLUMNS

    numbers: dict[str, array[int]] = {name: array("q") for name in ("partition", "offset", "newer", "time")}
    keys: list[str | None] = []
    values: list[str | None] = []
    kinds: list[str] = []
    statuses: list[str] = []
    hidden = 0
    from .consumer import gc_paused

    # The lists grow to millions of objects that make no cycles: the collector would traverse them
    # all, again and again, while each batch's messages are created (docs/benchmarks.md).
    with gc_paused():
        for batch in scan_batches(kafka, topic, partitions=partitions, from_offset=from_offset, to_offset=to_offset,
                                  last=last, key=key, markers=True, timeout=timeout):
            latest, rows = batch.latest, batch.messages
            if not markers:
                rows = [m for m in rows if not is_marker(m.headers())]
                hidden += len(batch.messages) - len(rows)
            ks, vs = list(map(Message.key, rows)), list(map(Message.value, rows))
            offsets: list[Any] = list(map(Message.offset, rows))
            found: list[Any] = list(map(latest.get, ks))  # type: ignore[arg-type]  # a key of None finds nothing
            newest = [n if n is not None and n != o else None for n, o in zip(found, offsets, strict=True)]
            numbers["offset"].extend(offsets)
            numbers["newer"].extend([-1 if n is None else n for n in newest])
            numbers["time"].extend([ts for _, ts in map(Message.timestamp, rows)])
            keys.extend(shown_all(ks))
            values.extend(shown_all(vs))
            kinds.extend(["tombstone" if v is None else "put" if v else "empty value" for v in vs])
            statuses.extend(["superseded" if n is not None else "tombstone" if v is None else "live"
                             for n, v in zip(newest, vs, strict=True)])
            numbers["partition"].extend([batch.partition] * len(rows))
    column = {name: np.frombuffer(buf, dtype=np.int64).copy() if len(buf) else np.zeros(0, dtype=np.int64)
              for name, buf in numbers.items()}
    newer = pd.arrays.IntegerArray(column["newer"], column["newer"] < 0)
    millis = pd.arrays.IntegerArray(column["time"], column["time"] < 0)
    frame = pd.DataFrame({
        "partition": pd.Series(column["partition"], dtype="int64"),
        "offset": pd.Series(column["offset"], dtype="int64"),
        "key": pd.Series(keys, dtype=object),
        "value": pd.Series(values, dtype=object),
        "kind": pd.Series(kinds, dtype=object),
        "status": pd.Series(statuses, dtype=object),
        "superseded_by": newer,
        "live": pd.Series([s == "live" for s in statuses], dtype=bool),
        "timestamp": pd.to_datetime(pd.Series(millis), unit="ms", utc=True),
    }, columns=list(LOG_COLUMNS))
    frame = frame if timestamps else frame.drop(columns=["timestamp"])
    frame.attrs["hidden_markers"] = hidden
    return frame
