"""The course's mechanics: murmur2 as Kafka computes it, the consumer-group split, paused consumers,
and the exercise checks."""

from __future__ import annotations

import pytest

from kafka_crud.client import UserClient
from kafka_crud.connection import Kafka
from kafka_crud.consumer import StoreConsumer
from kafka_crud.course import (
    DEMO_USERS,
    check_compaction,
    check_counts,
    check_group_owner,
    check_partition,
    check_tombstone,
    write_users,
)
from kafka_crud.errors import NotReadyError
from kafka_crud.group_consumer import start_group, stop_all
from kafka_crud.partitioning import crc32_partition, murmur2, partition_for
from kafka_crud.producer import UserProducer
from kafka_crud.records import LogRecord, User
from kafka_crud.server import serve_in_thread
from kafka_crud.store import UserStore
from kafka_crud.views import records_frame


@pytest.mark.parametrize(
    ("text", "expected"),
    [  # Kafka's own UtilsTest vectors
        ("21", -973932308),
        ("foobar", -790332482),
        ("a-little-bit-long-string", -985981536),
        ("a-little-bit-longer-string", -1486304829),
        ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        ("abc", 479470107),
    ],
)
def test_murmur2_matches_kafkas_test_vectors(text: str, expected: int) -> None:
    assert murmur2(text.encode()) == expected


def test_records_frame_shows_a_tombstone_as_none_and_an_empty_value_as_empty() -> None:
    records = [LogRecord("t", 0, 0, 0, b"a@b.c", None), LogRecord("t", 0, 1, 0, b"d@e.f", b"")]
    frame = records_frame(records)
    assert frame["value"].tolist() == [None, ""]
    assert frame["kind"].tolist() == ["tombstone", "empty value"]


def test_a_check_without_an_answer_says_so() -> None:
    verdict = check_group_owner(..., "radia@example.com", {"A": [0, 1], "B": [2]})
    assert verdict.ok is None
    assert repr(verdict).startswith("✏️")
    assert check_group_owner("A", "radia@example.com", {"A": [0, 1], "B": [2]}).ok is True
    assert check_group_owner("B", "radia@example.com", {"A": [0, 1], "B": [2]}).ok is False


@pytest.mark.broker
def test_partition_for_is_where_the_producer_puts_each_key(kafka: Kafka, topic: str) -> None:
    with UserProducer(kafka, topic=topic) as producer:
        written = write_users(producer, DEMO_USERS)
    assert written["partition"].tolist() == [partition_for(k, 3) for k in written["key"]]
    assert set(written["partition"]) == {0, 1, 2}


@pytest.mark.broker
def test_crc32_partition_is_where_librdkafkas_default_partitioner_puts_a_key(kafka: Kafka, topic: str) -> None:
    config: dict[str, object] = {"partitioner": "consistent_random"}
    with UserProducer(kafka, topic=topic, config=config) as producer:
        positions = [producer.put(user) for user in DEMO_USERS]
    assert [p.partition for p in positions] == [crc32_partition(u.email, 3) for u in DEMO_USERS]


@pytest.mark.broker
def test_a_consumer_group_splits_the_users_between_its_instances(kafka: Kafka, topic: str) -> None:
    with UserProducer(kafka, topic=topic) as producer:
        write_users(producer, DEMO_USERS)
    a, b = start_group(["A", "B"], kafka, topic=topic)
    try:
        assert (a.assignment, b.assignment) == ([0, 1], [2])
        known_by_a = {s.user.email for s in a.store.users()}
        known_by_b = {s.user.email for s in b.store.users()}
        assert known_by_a.isdisjoint(known_by_b)
        assert known_by_a | known_by_b == {u.email for u in DEMO_USERS}
        assert all(partition_for(email, 3) == 2 for email in known_by_b)
    finally:
        stop_all([a, b])


@pytest.mark.broker
def test_a_paused_consumer_applies_nothing_until_resumed(kafka: Kafka, topic: str) -> None:
    store = UserStore(topic)
    with UserProducer(kafka, topic=topic) as producer, StoreConsumer(store, kafka) as consumer:
        consumer.wait_ready(30)
        consumer.pause()
        position = producer.put(User("ada@example.com", "Ada"))
        with pytest.raises(NotReadyError):
            store.wait_for(position, 1.0)
        assert store.get("ada@example.com") is None
        consumer.resume()
        store.wait_for(position, 10)
        assert store.get("ada@example.com") is not None


@pytest.mark.broker
def test_without_read_your_writes_a_get_right_after_a_put_can_be_stale(kafka: Kafka, topic: str) -> None:
    with serve_in_thread(kafka, topic=topic, read_your_writes=False) as server:
        client = UserClient(server.url)
        assert client.put("ada@example.com", "Ada").status == 201
        server.service.wait_caught_up()
        server.service.consumer.pause()
        assert client.put("ada@example.com", "Ada Lovelace").status == 200
        assert client.get("ada@example.com").body["name"] == "Ada"
        server.service.consumer.resume()
        server.service.wait_caught_up()
        assert client.get("ada@example.com").body["name"] == "Ada Lovelace"


@pytest.mark.broker
def test_an_instance_started_paused_answers_503_until_resumed(kafka: Kafka, topic: str) -> None:
    with UserProducer(kafka, topic=topic) as producer:
        producer.put(User("grace@example.com", "Grace Hopper"))
    with serve_in_thread(kafka, topic=topic, wait_ready=None, paused=True) as server:
        client = UserClient(server.url)
        assert client.get("grace@example.com").status == 503
        assert client.request("GET", "/readyz").body == {"status": "rebuilding", "applied": 0, "total": 1}
        server.service.consumer.resume()
        server.service.wait_ready(30)
        assert client.get("grace@example.com").status == 200


@pytest.mark.broker
def test_the_exercise_checks_read_the_topic(kafka: Kafka, topic: str) -> None:
    with UserProducer(kafka, topic=topic) as producer:
        producer.put(User("grace@example.com", "Grace Hopper"))
        producer.send("grace@example.com", b"")
        assert check_tombstone(kafka, topic, "grace@example.com").ok is False
        producer.delete("grace@example.com")
        assert check_tombstone(kafka, topic, "grace@example.com").ok is True
    with serve_in_thread(kafka, topic=topic) as server:
        assert check_counts((3, 0), server.service).ok is True
        assert check_counts((3, 1), server.service).ok is False


@pytest.mark.broker
def test_the_partition_check_writes_the_user_and_compares_with_where_kafka_put_it(kafka: Kafka, topic: str) -> None:
    email = "radia@example.com"
    with UserProducer(kafka, topic=topic) as producer:
        assert check_partition(..., email, producer).ok is None
        right = check_partition(partition_for(email, 3), email, producer)
        wrong = check_partition((partition_for(email, 3) + 1) % 3, email, producer)
    assert right.ok is True, right.message
    assert wrong.ok is False
    assert "murmur2" in wrong.message
    written = [r for r in kafka.read_log(topic) if r.key == email.encode()]
    assert {r.partition for r in written} == {partition_for(email, 3)}
    assert len(written) == 2


@pytest.mark.broker
@pytest.mark.slow
def test_the_compaction_check_hints_at_a_wrong_answer_and_runs_the_pass_for_a_right_one(
    kafka: Kafka, topic: str
) -> None:
    with UserProducer(kafka, topic=topic) as producer:
        first = producer.put(User("ada@example.com", "Ada"))
        producer.put(User("ada@example.com", "Ada Lovelace"))
        alan = producer.put(User("alan@example.com", "Alan Turing"))
        tombstone = producer.delete("alan@example.com")
    superseded = {(first.partition, first.offset), (alan.partition, alan.offset)}

    assert check_compaction(..., kafka, topic).ok is None
    assert check_compaction(7, kafka, topic).ok is False
    wrong = check_compaction(superseded | {(tombstone.partition, tombstone.offset)}, kafka, topic)
    assert wrong.ok is False
    assert "tombstone" in wrong.message
    assert len(kafka.read_log(topic)) == 4  # a wrong answer leaves the topic alone

    right = check_compaction(superseded, kafka, topic)

    assert right.ok is True, right.message
    remaining = {(r.partition, r.offset) for r in kafka.read_log(topic)}
    assert not superseded & remaining
    assert (tombstone.partition, tombstone.offset) in remaining
