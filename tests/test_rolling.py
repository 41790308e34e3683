"""Roll markers: keyed to their partition, marked by a header, hidden by every view; kafka-crud compact."""

from __future__ import annotations

import pytest

from kafka_crud.cli import main
from kafka_crud.connection import Kafka, Watermarks
from kafka_crud.partitioning import partition_for
from kafka_crud.producer import UserProducer
from kafka_crud.records import MARKER_HEADER, MARKER_ROLL, LogRecord, User
from kafka_crud.rolling import marker_key, needs_roll
from kafka_crud.views import compare_frame, hidden_markers, records_frame, style_log, watermarks_frame


def _marker(partition: int, offset: int, partitions: int = 3) -> LogRecord:
    key = marker_key(partition, partitions).encode()
    return LogRecord("t", partition, offset, 1_700_000_000_000, key, None, [(MARKER_HEADER, MARKER_ROLL)])


def _user(partition: int, offset: int, email: str, name: str | None) -> LogRecord:
    value = None if name is None else User(email, name).to_json()
    return LogRecord("t", partition, offset, 1_700_000_000_000, email.encode(), value)


@pytest.mark.parametrize("partitions", [1, 2, 3, 6, 12])
def test_a_marker_key_hashes_to_the_partition_it_is_written_to(partitions: int) -> None:
    for partition in range(partitions):
        key = marker_key(partition, partitions)
        assert partition_for(key, partitions) == partition
        assert "@" not in key  # never a user's key


def test_a_record_is_a_marker_only_with_the_kits_header() -> None:
    assert _marker(0, 4).is_marker
    assert not _user(0, 1, "ada@example.com", "Ada").is_marker
    lookalike = LogRecord("t", 0, 5, 0, marker_key(0, 3).encode(), None, [("other", b"x")])
    assert not lookalike.is_marker


def test_views_hide_markers_by_default_and_say_how_many() -> None:
    records = [_user(0, 0, "ada@example.com", "Ada"), _user(0, 1, "ada@example.com", "Ada L"), _marker(0, 2),
               _marker(1, 0)]

    frame = records_frame(records, timestamps=False)

    assert frame["offset"].tolist() == [0, 1]
    assert hidden_markers(frame) == 2
    assert "2 roll marker(s) of the kit hidden" in repr(style_log(frame))
    shown = records_frame(records, timestamps=False, markers=True)
    assert len(shown) == 4
    assert hidden_markers(shown) == 0
    compared = compare_frame(records[:2], records)
    assert hidden_markers(compared) == 2
    assert set(compared["outcome"]) == {"kept"}


def test_watermarks_count_markers_apart_so_the_columns_add_up() -> None:
    records = [_user(0, 0, "ada@example.com", "Ada"), _user(0, 1, "ada@example.com", None), _marker(0, 2)]

    frame = watermarks_frame({0: Watermarks(0, 3)}, records)

    row = frame.iloc[0]
    assert (row["records"], row["live_keys"], row["superseded"], row["tombstones"], row["markers"]) == (3, 0, 1, 1, 1)


def test_a_partition_needs_a_roll_only_when_something_came_after_its_last_marker() -> None:
    records = [_user(0, 0, "ada@example.com", "Ada"), _marker(0, 1), _user(1, 0, "bob@example.com", "Bob"),
               _marker(2, 0), _user(2, 1, "cy@example.com", "Cy")]
    assert needs_roll(records) == [1, 2]


@pytest.mark.broker
def test_kafka_crud_compact_runs_one_cleaner_pass_and_log_hides_the_markers(
    kafka: Kafka, topic: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with UserProducer(kafka, topic=topic) as producer:
        producer.put(User("ada@example.com", "Ada"))
        producer.put(User("ada@example.com", "Ada Lovelace"))

    assert main(["compact", "--bootstrap-servers", kafka.bootstrap_servers, "--topic", topic]) == 0
    out = capsys.readouterr().out
    assert "1 of 2 records removed" in out
    assert any(r.is_marker for r in kafka.read_log(topic))

    assert main(["log", "--bootstrap-servers", kafka.bootstrap_servers, "--topic", topic]) == 0
    table = capsys.readouterr().out
    assert "__kafka_crud_roll_" not in table
    assert "(1 records)" in table
    assert main(["log", "--bootstrap-servers", kafka.bootstrap_servers, "--topic", topic, "--markers"]) == 0
    assert "__kafka_crud_roll_" in capsys.readouterr().out
