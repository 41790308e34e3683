"""Compaction and segments on a broker of our own, whose log dir we can read."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence

import pytest

from kafka_crud.broker import LocalKafka
from kafka_crud.compaction import compact, remove_tombstones, wait_for_cleaner
from kafka_crud.connection import Kafka
from kafka_crud.errors import CleanerTimeoutError, TopicNotCompactedError
from kafka_crud.partitioning import partition_for
from kafka_crud.producer import UserProducer
from kafka_crud.records import MARKER_HEADER, MARKER_ROLL, LogRecord, User, classify
from kafka_crud.rolling import marker_key, roll_segments
from kafka_crud.segments import cleaner_checkpoints, list_segments, local_log_dir
from kafka_crud.views import compare_frame, segments_frame

pytestmark = [pytest.mark.broker, pytest.mark.slow]

MakeTopic = Callable[..., str]


@pytest.fixture(scope="module")
def broker() -> Iterator[LocalKafka]:
    """A broker of this module's own: its log dir is on this machine, and the cleaner is ours alone."""
    local = LocalKafka()
    local.start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="module")
def kafka(broker: LocalKafka) -> Kafka:
    return broker.connect()


@pytest.fixture
def make_topic(kafka: Kafka) -> MakeTopic:
    def make(partitions: int = 1, **config: str) -> str:
        name = f"compaction-{uuid.uuid4().hex[:10]}"
        kafka.create_topic(name, partitions=partitions, config={k.replace("_", "."): v for k, v in config.items()})
        return name

    return make


def _write(kafka: Kafka, topic: str, writes: Sequence[tuple[str, bytes | None]]) -> None:
    with UserProducer(kafka, topic=topic) as producer:
        for key, value in writes:
            producer.send(key, value)


def _put(email: str, name: str) -> tuple[str, bytes | None]:
    return email, User(email, name).to_json()


def _live(records: list[LogRecord]) -> dict[bytes | None, bytes | None]:
    return {r.key: r.value for r, (status, _) in zip(records, classify(records), strict=True) if status == "live"}


def _settings(kafka: Kafka, topic: str) -> dict[str, str]:
    config = kafka.topic_config(topic)
    return {name: config[name] for name in ("segment.ms", "min.cleanable.dirty.ratio")}


def _kcat_positions(kafka: Kafka, topic: str) -> set[tuple[int, int]]:
    """(partition, offset) of every record an independent client (kcat) reads from ``topic``."""
    out = subprocess.run(
        ["kcat", "-C", "-b", kafka.bootstrap_servers, "-t", topic, "-e", "-q", "-f", "%p %o\n"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    positions = [tuple(map(int, line.split())) for line in out.splitlines()]
    return {(p, o) for p, o in positions}


def test_local_log_dir_finds_the_embedded_brokers_log_dir_from_a_connection_or_an_address(
    broker: LocalKafka, kafka: Kafka
) -> None:
    assert local_log_dir(kafka) == broker.log_dir
    assert local_log_dir(broker.bootstrap_servers) == broker.log_dir


def test_roll_starts_a_new_active_segment_at_the_roll_record_and_restores_segment_ms(
    kafka: Kafka, make_topic: MakeTopic
) -> None:
    topic = make_topic(partitions=1)
    # Two keys, nothing superseded: the cleaner may clean the rolled segment at once without changing it.
    _write(kafka, topic, [_put("ada@example.com", "Ada"), _put("bob@example.com", "Bob")])
    assert [s.base_offset for s in list_segments(kafka, topic)] == [0]

    rolled = roll_segments(kafka, topic)

    assert rolled == {0: 2}
    segments = list_segments(kafka, topic)
    assert [(s.base_offset, s.records, s.active) for s in segments] == [(0, 2, False), (2, 1, True)]
    last = kafka.read_log(topic)[-1]
    assert (last.offset, last.key, last.value) == (2, marker_key(0, 1).encode(), None)
    assert last.is_marker
    assert last.headers == [(MARKER_HEADER, MARKER_ROLL)]
    assert _settings(kafka, topic) == {"segment.ms": "600000", "min.cleanable.dirty.ratio": "0.01"}


def test_compaction_removes_superseded_records_and_keeps_offsets(kafka: Kafka, make_topic: MakeTopic) -> None:
    topic = make_topic(partitions=3)
    writes = [_put(f"user{i}@example.com", f"v{version}") for version in range(3) for i in range(6)]
    writes += [("user0@example.com", None), ("user1@example.com", b"")]
    _write(kafka, topic, writes)

    result = compact(kafka, topic, timeout=60)

    before, after = result.before, result.after
    statuses = zip(before, classify(before), strict=True)
    superseded = {(r.partition, r.offset) for r, (s, _) in statuses if s == "superseded"}
    assert {(r.partition, r.offset) for r in result.removed} == superseded  # all of them, nothing else
    assert len(result.removed) == 6 * 3 - 6 + 2  # 12 older versions, user0's and user1's last puts
    by_position = {(r.partition, r.offset): r for r in after}
    for record in result.kept:  # survivors keep their offsets, keys and values
        assert by_position[(record.partition, record.offset)] == record
    new = [r for r in after if (r.partition, r.offset) not in {(b.partition, b.offset) for b in before}]
    assert all(r.is_marker and r.value is None for r in new)
    assert {r.partition: r.offset for r in new} == result.rolled
    for marker in new:  # a marker's key hashes to its partition: every key lives in one partition
        assert partition_for(marker.key or b"", 3) == marker.partition
    assert _live(after) == _live(before)  # the table a reader rebuilds is the same
    assert result.gaps, "survivors keep their offsets, so the removed ones leave gaps"
    # What a consumer sees: an independent client reads exactly the records compact() reports,
    # and the gaps in their offsets are exactly where the removed records were.
    assert _kcat_positions(kafka, topic) == {(r.partition, r.offset) for r in after}
    in_gaps = {(p, offset) for p, first, last in result.gaps for offset in range(first, last + 1)}
    assert in_gaps == {(r.partition, r.offset) for r in result.removed}
    assert result.seconds < 30
    assert set(compare_frame(before, after)["outcome"]) == {"kept", "removed"}  # the new records are markers
    assert set(compare_frame(before, after, markers=True)["outcome"]) == {"kept", "removed", "new"}
    assert _settings(kafka, topic) == {"segment.ms": "600000", "min.cleanable.dirty.ratio": "0.01"}


def test_segments_show_records_gaps_and_the_delete_horizon_of_a_kept_tombstone(
    broker: LocalKafka, kafka: Kafka, make_topic: MakeTopic
) -> None:
    topic = make_topic(partitions=1)  # the teaching delete.retention.ms: 10 s
    _write(kafka, topic, [_put("ada@example.com", "A"), _put("bob@example.com", "B"),
                          _put("ada@example.com", "A2"), ("bob@example.com", None)])

    result = compact(kafka, topic)
    stamped_at = time.time() * 1000
    frame = segments_frame(list_segments(kafka, topic))

    assert frame["active"].tolist() == [False, True]
    cleaned = frame.iloc[0]
    assert (cleaned["base_offset"], cleaned["first_offset"], cleaned["last_offset"]) == (0, 2, 3)
    assert (cleaned["records"], cleaned["tombstones"], cleaned["cleaned"]) == (2, 1, True)
    assert cleaned["stamped"]
    horizon = cleaned["delete_horizon"].timestamp() * 1000
    assert stamped_at + 8_000 < horizon < stamped_at + 10_500  # the pass's time + delete.retention.ms
    assert int(frame["records"].sum()) == len(result.after)
    assert cleaner_checkpoints(broker.log_dir)[(topic, 0)] == result.rolled[0]
    assert "delete_horizon" not in segments_frame(list_segments(kafka, topic), timestamps=False).columns


def test_tombstones_are_removed_after_delete_retention_and_empty_values_stay(
    kafka: Kafka, make_topic: MakeTopic
) -> None:
    topic = make_topic(partitions=1, delete_retention_ms="1000")
    _write(kafka, topic, [_put("ada@example.com", "A"), _put("bob@example.com", "B"),
                          ("bob@example.com", None), ("cy@example.com", b"")])

    step = remove_tombstones(kafka, topic, timeout=60)

    bob_tombstone = (2, b"bob@example.com", None)
    assert bob_tombstone in [(r.offset, r.key, r.value) for r in step.stamped]  # the first pass keeps it
    assert bob_tombstone in [(r.offset, r.key, r.value) for r in step.removed]
    assert [(r.offset, r.key) for r in step.after if not r.is_marker] == [
        (0, b"ada@example.com"), (3, b"cy@example.com"),  # no trace of bob; the empty value stays
    ]
    assert step.delete_retention_ms == 1000
    assert step.delete_horizon_ms is not None
    assert len(step.passes) >= 2
    assert step.seconds < 30


def test_compaction_without_the_log_dir_waits_by_reading_the_log(kafka: Kafka, make_topic: MakeTopic) -> None:
    topic = make_topic(partitions=1)
    _write(kafka, topic, [_put("ada@example.com", "A"), _put("ada@example.com", "A2")])

    result = compact(kafka, topic, log_dir=None, timeout=60)

    assert [r.offset for r in result.removed] == [0]
    assert [r.offset for r in result.after] == [1, 2]


def test_waiting_for_a_cleaner_that_never_comes_times_out_with_advice(
    kafka: Kafka, make_topic: MakeTopic
) -> None:
    topic = make_topic(partitions=1, cleanup_policy="delete")
    _write(kafka, topic, [_put("ada@example.com", "A"), _put("ada@example.com", "A2")])
    rolled = roll_segments(kafka, topic)

    with pytest.raises(CleanerTimeoutError, match="Is the topic compacted"):
        wait_for_cleaner(kafka, topic, rolled, timeout=1.5)
    with pytest.raises(TopicNotCompactedError, match="never compacts it"):
        compact(kafka, topic)


def test_the_lessons_next_write_rolls_the_segment_and_no_marker_is_written(
    kafka: Kafka, make_topic: MakeTopic
) -> None:
    topic = make_topic(partitions=3)
    history = [_put("ada@example.com", "Ada"), _put("ada@example.com", "Ada Lovelace"),
               _put("alan@example.com", "Alan"), ("alan@example.com", None), _put("grace@example.com", "Grace")]
    _write(kafka, topic, history)
    written = {partition_for(email, 3) for email, _ in history}
    # One new user per partition that holds records: their writes are the next appends.
    newcomers: dict[int, str] = {}
    for i in range(100):
        email = f"new{i}@example.com"
        newcomers.setdefault(partition_for(email, 3), email)
    writes = [_put(newcomers[p], "New") for p in sorted(written)]

    result = compact(kafka, topic, write=lambda: _write(kafka, topic, writes))

    assert not any(r.is_marker for r in kafka.read_log(topic))
    assert sorted(result.rolled) == sorted(written)
    starts = {r.partition: r.offset for r in result.after if r.key in {e.encode() for e, _ in writes}}
    assert starts == result.rolled  # each new user's record is the first of its partition's active segment
    superseded = {(r.partition, r.offset) for r, (s, _) in zip(result.before, classify(result.before), strict=True)
                  if s == "superseded"}
    assert {(r.partition, r.offset) for r in result.removed} == superseded
    keys: dict[bytes | None, set[int]] = {}
    for record in kafka.read_log(topic):
        keys.setdefault(record.key, set()).add(record.partition)
    assert all(len(partitions) == 1 for partitions in keys.values())


def test_a_compaction_with_nothing_new_since_the_last_roll_appends_nothing(kafka: Kafka, make_topic: MakeTopic) -> None:
    topic = make_topic(partitions=1)
    _write(kafka, topic, [_put("ada@example.com", "A"), _put("ada@example.com", "A2")])
    compact(kafka, topic)
    end = kafka.watermarks(topic)[0].high

    again = compact(kafka, topic)

    assert again.rolled == {}
    assert kafka.watermarks(topic)[0].high == end
