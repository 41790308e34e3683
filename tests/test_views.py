"""The log as DataFrames, tables and plots: from the session's real broker, or from given records."""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from confluent_kafka import TopicPartition
from helpers import small_log as _records

from kafka_crud.connection import Kafka, Watermarks
from kafka_crud.errors import ConfigError, TopicNotFoundError
from kafka_crud.plots import plot_compaction, plot_log
from kafka_crud.producer import UserProducer
from kafka_crud.records import LogRecord, Position, User
from kafka_crud.segments import Segment, list_segments
from kafka_crud.store import StoredUser
from kafka_crud.views import (
    COMPARE_COLUMNS,
    GROUP_COLUMNS,
    LOG_COLUMNS,
    SEGMENT_COLUMNS,
    WATERMARK_COLUMNS,
    compare_frame,
    groups_frame,
    records_frame,
    segments_frame,
    style_log,
    users_frame,
    watermarks_frame,
)

MakeTopic = Callable[..., str]


@pytest.fixture
def make_topic(topic_factory: Callable[..., str]) -> MakeTopic:
    return lambda partitions: topic_factory("views", partitions=partitions)


def _write_history(kafka: Kafka, topic: str) -> None:
    """ada twice, bob then his tombstone, cy with an empty value (not a tombstone)."""
    with UserProducer(kafka, topic=topic) as producer:
        producer.put(User("ada@example.com", "Ada"))
        producer.put(User("bob@example.com", "Bob"))
        producer.put(User("ada@example.com", "Ada Lovelace"))
        producer.delete("bob@example.com")
        producer.send("cy@example.com", b"")


@pytest.mark.broker
def test_records_frame_of_the_log_lists_every_record_with_kind_status_and_superseding_offset(
    kafka: Kafka, make_topic: MakeTopic
) -> None:
    topic = make_topic(partitions=1)
    _write_history(kafka, topic)

    frame = records_frame(kafka.read_log(topic))

    assert list(frame.columns) == list(LOG_COLUMNS)
    assert frame["offset"].tolist() == [0, 1, 2, 3, 4]
    assert frame["key"].tolist() == [
        "ada@example.com", "bob@example.com", "ada@example.com", "bob@example.com", "cy@example.com",
    ]
    assert frame["kind"].tolist() == ["put", "put", "put", "tombstone", "empty value"]
    assert frame["status"].tolist() == ["superseded", "superseded", "live", "tombstone", "live"]
    assert frame["superseded_by"].tolist() == [2, 3, pd.NA, pd.NA, pd.NA]
    assert frame["live"].tolist() == [False, False, True, False, True]
    assert frame["value"][3] is None
    assert frame["value"][4] == ""
    assert json.loads(frame["value"][2]) == {"email": "ada@example.com", "name": "Ada Lovelace"}
    assert frame["timestamp"].dt.tz is not None


@pytest.mark.broker
def test_records_frame_without_timestamps_leaves_out_only_that_column_and_reads_the_same_twice(
    kafka: Kafka, make_topic: MakeTopic
) -> None:
    topic = make_topic(partitions=1)
    _write_history(kafka, topic)

    frame = records_frame(kafka.read_log(topic), timestamps=False)

    assert list(frame.columns) == [c for c in LOG_COLUMNS if c != "timestamp"]
    assert frame.to_string() == records_frame(kafka.read_log(topic), timestamps=False).to_string()


@pytest.mark.broker
def test_watermarks_count_offsets_while_live_keys_count_the_table(kafka: Kafka, make_topic: MakeTopic) -> None:
    topic = make_topic(partitions=3)
    _write_history(kafka, topic)

    frame = watermarks_frame(kafka.watermarks(topic), kafka.read_log(topic))

    assert list(frame.columns) == list(WATERMARK_COLUMNS)
    assert frame["partition"].tolist() == [0, 1, 2]
    assert (frame["low"] == 0).all()
    assert int(frame["high_minus_low"].sum()) == 5  # what a Kafka UI calls "5 messages"
    assert int(frame["records"].sum()) == 5
    assert int(frame["live_keys"].sum()) == 2  # ada, and cy (an empty value is kept, not a delete)
    assert int(frame["superseded"].sum()) == 2
    assert int(frame["tombstones"].sum()) == 1
    assert (frame["records"] == frame["live_keys"] + frame["superseded"] + frame["tombstones"]).all()


@pytest.mark.broker
def test_watermarks_of_a_missing_topic_say_to_create_it(kafka: Kafka) -> None:
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    where = re.escape(f"{missing!r} does not exist on {kafka.bootstrap_servers}: create it first")
    with pytest.raises(TopicNotFoundError, match=where):
        kafka.watermarks(missing)


@pytest.mark.broker
def test_groups_frame_shows_committed_offsets_and_lag(kafka: Kafka, make_topic: MakeTopic) -> None:
    topic = make_topic(partitions=2)
    with UserProducer(kafka, topic=topic) as producer:
        for i in range(5):
            producer.put(User(f"user{i}@example.com", f"User {i}"))
    ends = {p: w.high for p, w in kafka.watermarks(topic).items()}
    group = f"views-group-{uuid.uuid4().hex[:8]}"
    consumer = kafka.consumer(**{"group.id": group})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
    finally:
        consumer.close()
    try:
        frame = groups_frame(kafka.group_offsets([group]))
        everyone = groups_frame(kafka.group_offsets(topic=topic))
    finally:
        kafka.admin.delete_consumer_groups([group], request_timeout=30)[group].result(timeout=30)

    assert list(frame.columns) == list(GROUP_COLUMNS)
    assert frame[["group", "topic", "partition"]].values.tolist() == [[group, topic, 0], [group, topic, 1]]
    assert frame["committed"].tolist() == [1, pd.NA]
    assert frame["end_offset"].tolist() == [ends[0], ends[1]]
    assert frame["lag"].tolist() == [ends[0] - 1, pd.NA]
    assert everyone.equals(frame)




def test_style_log_colours_rows_by_status_and_renders_the_same_twice() -> None:
    frame = records_frame(_records(), timestamps=False)

    first = style_log(frame).to_html()
    second = style_log(frame).to_html()

    assert first == second
    for background in ("#d4e6f4", "#ececec", "#f9dcc8"):  # live, superseded, tombstone
        assert background in first
    assert "● live: blue, ○ superseded: grey, ✝ tombstone: orange" in first
    assert ">null<" in first  # the tombstone's value
    assert "<NA>" not in first  # shown as an empty cell, not as a tag a browser would swallow


def test_compare_frame_marks_kept_removed_and_new_records_at_unchanged_offsets() -> None:
    before = _records()
    roll = LogRecord("t", 0, 4, 1_700_000_000_010, b"new@example.com", b"{}")
    after = [r for r in before if (r.partition, r.offset) in {(0, 2), (0, 3), (1, 0)}] + [roll]

    frame = compare_frame(before, after)

    assert list(frame.columns) == [c for c in COMPARE_COLUMNS if c != "timestamp"]
    assert frame[["partition", "offset", "outcome"]].values.tolist() == [
        [0, 0, "removed"], [0, 1, "removed"], [0, 2, "kept"], [0, 3, "kept"], [0, 4, "new"], [1, 0, "kept"],
    ]
    assert "line-through" in style_log(frame).to_html()


def test_plot_compaction_draws_before_above_after_on_one_offset_axis() -> None:
    before = _records()
    after = [r for r in before if r.offset >= 2 or r.partition == 1]

    figure = plot_compaction(before, after)

    top, bottom = figure.axes[:2]
    assert top.get_title() == "before: 5 records"
    assert bottom.get_title().startswith("after: 3 records (2 removed")
    assert top.get_shared_x_axes().joined(top, bottom)
    figure.savefig(io.BytesIO(), format="png")  # renders without a display


def test_plot_log_returns_its_figure() -> None:
    from matplotlib.figure import Figure

    figure = plot_log(records_frame(_records()), title="the log")

    assert isinstance(figure, Figure)
    assert figure.axes[0].get_title() == "the log"
    labels = figure.axes[0].get_legend_handles_labels()[1]
    assert labels == ["superseded (2)", "live (2)", "tombstone (1)"]


def test_users_frame_lists_email_name_and_position() -> None:
    users = [StoredUser(User("ada@x", "Ada"), Position("t", 1, 7))]

    frame = users_frame(users)

    assert frame.values.tolist() == [["ada@x", "Ada", 1, 7]]
    assert list(users_frame([]).columns) == ["email", "name", "partition", "offset"]


@pytest.mark.broker
def test_segments_of_a_broker_whose_files_are_elsewhere_raise_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, kafka: Kafka, make_topic: MakeTopic
) -> None:
    topic = make_topic(partitions=1)
    monkeypatch.setattr("kafka_crud.segments._broker_log_dirs", lambda kafka: ("cluster", ["/var/lib/kafka/data"]))

    with pytest.raises(ConfigError, match="only be listed for the embedded broker: its log dir is on this machine"):
        list_segments(kafka, topic)


def test_segments_frame_shows_each_segment_and_the_delete_horizon_in_utc() -> None:
    folder = Path("/nowhere/t-0")
    horizon = 1_700_000_010_000
    segments = [
        Segment("t", 0, 0, 2, 3, 2, 1, 1, 170, False, True, horizon, folder / "00000000000000000000.log"),
        Segment("t", 0, 4, None, None, 0, 0, 0, 0, True, False, None, folder / "00000000000000000004.log"),
    ]

    frame = segments_frame(segments)

    assert list(frame.columns) == list(SEGMENT_COLUMNS)
    assert frame["segment"].tolist() == ["00000000000000000000.log", "00000000000000000004.log"]
    assert frame["first_offset"].tolist() == [2, pd.NA]
    assert frame["stamped"].tolist() == [True, False]
    assert frame["delete_horizon"][0] == pd.Timestamp(horizon, unit="ms", tz="UTC")
    assert frame["delete_horizon"].isna().tolist() == [False, True]
    assert list(segments_frame(segments, timestamps=False).columns) == [
        c for c in SEGMENT_COLUMNS if c != "delete_horizon"
    ]


def test_watermarks_frame_counts_only_records_below_the_end_offsets_it_is_given() -> None:
    marks = {0: Watermarks(0, 4), 1: Watermarks(0, 1)}
    late = LogRecord("t", 0, 4, 1_700_000_000_004, b"dan@x", b'{"email":"dan@x","name":"D"}')

    frame = watermarks_frame(marks, [*_records(), late])  # read after the watermarks: one more record

    assert frame[["partition", "low", "high", "high_minus_low", "records"]].values.tolist() == [
        [0, 0, 4, 4, 4], [1, 0, 1, 1, 1],
    ]
    assert frame["live_keys"].tolist() == [1, 1]  # ada's latest; cy's empty value
    assert frame["superseded"].tolist() == [2, 0]
    assert frame["tombstones"].tolist() == [1, 0]
