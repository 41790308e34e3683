"""Views that scale: ranges of the log, a scan that classifies with memory by keys, a summary, any value."""

from __future__ import annotations

import json
from collections.abc import Callable

import pandas as pd
import pytest

from kafka_crud import cli
from kafka_crud.connection import Kafka
from kafka_crud.errors import ValidationError
from kafka_crud.records import MARKER_HEADER, MARKER_ROLL, classify
from kafka_crud.scan import log_frame
from kafka_crud.summary import summarize, summary_frame
from kafka_crud.values import schema_id, shown, value_kind
from kafka_crud.views import LOG_COLUMNS, records_frame, watermarks_frame

MakeTopic = Callable[..., str]
FRAMED = b"\x00\x00\x00\x00\x07" + b"\x0aAda"  # Schema Registry's framing: magic 0, schema id 7, payload
BINARY = b"\xff\xfe\x00\x01"


def test_values_that_are_not_text_are_named_for_what_they_are() -> None:
    assert [value_kind(v) for v in (None, b"", b'{"a":1}', "é".encode(), BINARY, FRAMED)] == [
        "null", "empty", "text", "text", "binary", "schema-registry",
    ]
    assert schema_id(FRAMED) == 7
    assert shown(FRAMED) == "schema-registry id=7, 9 bytes: 00 00 00 00 07 0a 41 64 61"
    assert shown(BINARY) == "binary, 4 bytes: ff fe 00 01"
    assert shown(b"") == ""
    assert shown(None) is None
    assert shown("Ada é".encode()) == "Ada é"
    assert shown(bytes(range(1, 40))) == bytes(range(1, 40)).decode()  # control characters are still text
    assert shown(b"\xff" * 40) == "binary, 40 bytes: " + " ".join(["ff"] * 16) + " …"


def test_a_zero_schema_id_is_no_schema_registry_frame() -> None:
    # A big-endian number below 2**32 starts with five zero bytes: schema ids start at 1.
    eight = (5).to_bytes(8, "big")
    assert schema_id(eight) is None
    assert value_kind(eight) == "binary"  # valid UTF-8, but text hardly ever holds a NUL byte
    assert value_kind(b"\x00\x01") == "binary"  # too short to be framed
    assert shown(eight) == "binary, 8 bytes: 00 00 00 00 00 00 00 05"


def _write(kafka: Kafka, topic: str, records: list[tuple[bytes | None, bytes | None]], *,
           partition: int = 0, headers: list[tuple[str, str | bytes | None]] | None = None) -> None:
    producer = kafka.producer()
    errors: list[object] = []
    for key, value in records:
        producer.produce(topic, value=value, key=key, partition=partition, headers=headers,
                         on_delivery=lambda err, _: errors.append(err) if err else None)
    assert producer.flush(30) == 0
    assert errors == []


HISTORY: list[tuple[bytes | None, bytes | None]] = [
    (b"ada@example.com", b'{"email":"ada@example.com","name":"Ada"}'),  # 0 superseded by 2, latest 5
    (b"bob@example.com", b'{"email":"bob@example.com","name":"Bob"}'),  # 1 superseded
    (b"ada@example.com", b'{"email":"ada@example.com","name":"Ada L."}'),  # 2 superseded by 5
    (b"bob@example.com", None),  # 3 tombstone
    (b"cy@example.com", b""),  # 4 empty value: live
    (b"ada@example.com", b'{"email":"ada@example.com","name":"Ada Lovelace"}'),  # 5 live
    (BINARY, FRAMED),  # 6 a binary key, a Schema Registry value: live
    (b"\x00\x00\x00\x00\x02\x02A", b"x"),  # 7 a key in Schema Registry's framing (a compacted topic needs keys)
]


@pytest.mark.broker
def test_a_scan_classifies_as_classify_does_and_names_the_latest_record(kafka: Kafka, topic_factory: MakeTopic) -> None:
    topic = topic_factory(partitions=1)
    _write(kafka, topic, HISTORY)

    frame = log_frame(kafka, topic, timestamps=False)
    held = records_frame(kafka.read_log(topic), timestamps=False)

    assert list(frame.columns) == [c for c in LOG_COLUMNS if c != "timestamp"]
    assert frame["status"].tolist() == held["status"].tolist() == [
        "superseded", "superseded", "superseded", "tombstone", "live", "live", "live", "live",
    ]
    # classify names the next record of the key; a scan, the latest (what the cleaner compares with).
    assert held["superseded_by"].tolist()[:3] == [2, 3, 5]
    assert frame["superseded_by"].tolist() == [5, 3, 5, pd.NA, pd.NA, pd.NA, pd.NA, pd.NA]
    assert frame["kind"].tolist() == held["kind"].tolist()
    assert frame["value"][3] is None
    assert frame["value"][4] == ""
    assert frame["key"][6] == "binary, 4 bytes: ff fe 00 01"
    assert frame["value"][6].startswith("schema-registry id=7, 9 bytes: 00 00 00 00 07")
    assert frame["key"][7] == "schema-registry id=2, 7 bytes: 00 00 00 00 02 02 41"
    assert frame["live"].tolist() == [s == "live" for s in frame["status"]]


@pytest.mark.broker
def test_ranges_read_only_their_records_and_keep_the_whole_partitions_statuses(
    kafka: Kafka, topic_factory: MakeTopic,
) -> None:
    topic = topic_factory(partitions=2)
    _write(kafka, topic, HISTORY)
    _write(kafka, topic, [(b"dan@example.com", b"1"), (b"dan@example.com", b"2")], partition=1)

    assert [r.offset for r in kafka.read_log(topic, partitions=[0], from_offset=2, to_offset=5)] == [2, 3, 4]
    assert [(r.partition, r.offset) for r in kafka.read_log(topic, last=2)] == [(0, 6), (0, 7), (1, 0), (1, 1)]
    assert [r.offset for r in kafka.read_log(topic, last=100, partitions=[1])] == [0, 1]
    assert [r.offset for r in kafka.read_log(topic, key="ada@example.com")] == [0, 2, 5]
    assert [r.offset for r in kafka.read_log(topic, key=BINARY)] == [6]
    # With a key, the last N are that key's: not the key's records among the partition's last N.
    assert [r.offset for r in kafka.read_log(topic, key="ada@example.com", last=2)] == [2, 5]
    assert log_frame(kafka, topic, key="ada@example.com", last=1)["status"].tolist() == ["live"]
    assert kafka.read_log(topic, from_offset=50) == []
    # Offset 2 is superseded by offset 5, beyond the range: a range has the statuses of the whole partition.
    frame = log_frame(kafka, topic, partitions=[0], to_offset=3, timestamps=False)
    assert frame["status"].tolist() == ["superseded", "superseded", "superseded"]
    assert log_frame(kafka, topic, key="dan@example.com")["status"].tolist() == ["superseded", "live"]
    assert log_frame(kafka, topic, last=1, partitions=[0])["offset"].tolist() == [7]


@pytest.mark.broker
def test_a_bad_range_is_a_clear_error(kafka: Kafka, topic_factory: MakeTopic) -> None:
    topic = topic_factory(partitions=1)
    for bad, words in (({"last": 0}, "last must be"), ({"from_offset": -1}, "from_offset must be"),
                       ({"partitions": [3]}, "no partition 3")):
        with pytest.raises(ValidationError, match=words):
            kafka.read_log(topic, **bad)


@pytest.mark.broker
def test_the_summary_counts_what_watermarks_frame_counts_without_holding_the_records(
    kafka: Kafka, topic_factory: MakeTopic,
) -> None:
    topic = topic_factory(partitions=3)
    _write(kafka, topic, HISTORY, partition=0)
    _write(kafka, topic, [(b"eve@example.com", b"1"), (b"eve@example.com", None), (b"fay@example.com", None)],
           partition=1)
    _write(kafka, topic, [(b"__kafka_crud_roll_1__", None)], partition=1, headers=[(MARKER_HEADER, MARKER_ROLL)])

    summary = summary_frame(kafka, topic)

    pd.testing.assert_frame_equal(summary, watermarks_frame(kafka.watermarks(topic), kafka.read_log(topic)))
    first, second, empty = summarize(kafka, topic)
    assert (first.records, first.live_keys, first.superseded, first.tombstones) == (8, 4, 3, 1)
    assert (second.records, second.live_keys, second.superseded, second.tombstones, second.markers) == (4, 0, 1, 2, 1)
    assert (empty.records, empty.high_minus_low) == (0, 0)
    statuses = [s for s, _ in classify(kafka.read_log(topic, partitions=[0]))]
    assert first.live_keys == statuses.count("live")


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["log", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.broker
def test_the_log_command_streams_json_lines_with_kinds_and_the_old_fields(
    kafka: Kafka, topic_factory: MakeTopic, capsys: pytest.CaptureFixture[str],
) -> None:
    topic = topic_factory(partitions=1)
    _write(kafka, topic, HISTORY)
    code, out, _ = _cli(capsys, "--bootstrap-servers", kafka.bootstrap_servers, "--topic", topic, "--format", "json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["offset"] for r in rows] == list(range(8))
    for row in rows:
        assert {"partition", "offset", "timestamp", "key", "value", "status", "superseded_by"} <= row.keys()
    assert [r["status"] for r in rows] == ["superseded", "superseded", "superseded", "tombstone", "live", "live",
                                           "live", "live"]
    assert rows[0]["superseded_by"] == 5
    assert rows[5]["superseded_by"] is None
    assert rows[0]["value"] == '{"email":"ada@example.com","name":"Ada"}'
    assert rows[0]["value_kind"] == "text"
    assert (rows[3]["value"], rows[3]["value_kind"]) == (None, "null")
    assert (rows[4]["value"], rows[4]["value_kind"]) == ("", "empty")
    assert (rows[6]["key"], rows[6]["key_kind"]) == (BINARY.hex(), "binary")
    assert (rows[6]["value"], rows[6]["value_kind"], rows[6]["value_schema_id"]) == (FRAMED.hex(), "schema-registry", 7)
    assert (rows[7]["key_kind"], rows[7]["key_schema_id"]) == ("schema-registry", 2)
    # The same lines as json.dumps would write them, field for field.
    assert out.splitlines()[0] == json.dumps(rows[0], ensure_ascii=False)


@pytest.mark.broker
def test_the_log_command_reads_ranges_and_summarizes(
    kafka: Kafka, topic_factory: MakeTopic, capsys: pytest.CaptureFixture[str],
) -> None:
    topic = topic_factory(partitions=2)
    _write(kafka, topic, HISTORY)
    where = ["--bootstrap-servers", kafka.bootstrap_servers, "--topic", topic]

    code, out, _ = _cli(capsys, *where, "--last", "2", "--partition", "0")
    assert code == 0
    assert out.splitlines()[0].split() == ["partition", "offset", "status", "key", "value"]
    assert "schema-registry id=7" in out
    assert "binary, 4 bytes: ff fe 00 01" in out
    assert out.splitlines()[-1] == "(2 records)"
    code, out, _ = _cli(capsys, *where, "--format", "csv", "--key", "ada@example.com", "--from-offset", "1")
    assert out.splitlines()[0] == "partition,offset,timestamp,key,value,status,superseded_by,key_kind,value_kind"
    assert [line.split(",")[1] for line in out.splitlines()[1:]] == ["2", "5"]
    code, out, _ = _cli(capsys, *where, "--summary", "--format", "json")
    assert [json.loads(line) for line in out.splitlines()] == [
        {"partition": s.partition, "low": s.low, "high": s.high, "high_minus_low": s.high_minus_low,
         "records": s.records, "live_keys": s.live_keys, "superseded": s.superseded, "tombstones": s.tombstones,
         "markers": s.markers}
        for s in summarize(kafka, topic)
    ]
    code, out, err = _cli(capsys, *where, "--summary", "--last", "3")
    assert code == 2
    assert out == ""
    assert "--summary counts whole partitions" in err
    code, out, err = _cli(capsys, *where, "--partition", "7")
    assert code == 1
    assert "no partition 7" in err


@pytest.mark.broker
def test_the_last_records_are_found_across_the_gaps_compaction_leaves(kafka: Kafka, topic_factory: MakeTopic) -> None:
    from kafka_crud.compaction import compact

    topic = topic_factory(partitions=1)
    _write(kafka, topic, [(b"cy@example.com", b"1"), *[(b"ada@example.com", b"%d" % i) for i in range(10)],
                          (b"bob@example.com", b"1")])
    compact(kafka, topic, timeout=60)
    kept = [(r.offset, r.is_marker) for r in kafka.read_log(topic)]
    assert kept[:3] == [(0, False), (10, False), (11, False)]  # offsets 1 to 9 are gone

    # All the records: the tail's windows double until they reach offset 0, across the gap.
    assert [r.offset for r in kafka.read_log(topic, last=len(kept))] == [offset for offset, _ in kept]
    assert [r.offset for r in kafka.read_log(topic, last=len(kept) - 1)] == [offset for offset, _ in kept[1:]]
    assert log_frame(kafka, topic, last=len(kept))["offset"].tolist() == [0, 10, 11]  # the marker hidden


@pytest.mark.broker
def test_a_batch_of_text_writes_the_same_lines_as_json_dumps(
    kafka: Kafka, topic_factory: MakeTopic, capsys: pytest.CaptureFixture[str],
) -> None:
    topic = topic_factory(partitions=1)
    _write(kafka, topic, [(b"ada@example.com", b'{"name":"Ada"}'), (b"b\xc3\xa9a", b'"quoted" \\ \xc3\xa9'),
                          (b"ada@example.com", b'{"name":"Ada L."}')])
    code, out, _ = _cli(capsys, "--bootstrap-servers", kafka.bootstrap_servers, "--topic", topic, "--format", "json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert out.splitlines() == [json.dumps(row, ensure_ascii=False) for row in rows]
    assert [(r["key"], r["status"], r["superseded_by"]) for r in rows] == [
        ("ada@example.com", "superseded", 2), ("béa", "live", None), ("ada@example.com", "live", None),
    ]
    assert rows[1]["value"] == '"quoted" \\ é'
