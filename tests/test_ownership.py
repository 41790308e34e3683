"""Nothing of theirs destroyed: on a cluster the kit did not start, the kit deletes, re-creates,
re-configures and compacts only topics it created itself."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka.admin import NewTopic

from kafka_crud.broker import LocalKafka
from kafka_crud.cli import main
from kafka_crud.compaction import compact
from kafka_crud.connection import Kafka
from kafka_crud.errors import TopicNotOwnedError
from kafka_crud.producer import UserProducer
from kafka_crud.records import User
from kafka_crud.service import UserService
from kafka_crud.topics import REGISTRY_TOPIC

pytestmark = [pytest.mark.broker, pytest.mark.slow]


@pytest.fixture(scope="module")
def their_kafka() -> Iterator[Kafka]:
    """A broker formatted with a cluster id the kit did not make: it stands for someone else's cluster."""
    foreign = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=").replace("-", "x")
    broker = LocalKafka(cluster_id=foreign)
    broker.start()
    try:
        yield broker.connect()
    finally:
        broker.stop()


def _their_topic(kafka: Kafka, name: str) -> list[tuple[int, int]]:
    """A compacted topic created by someone else, holding two users; where its records are."""
    kafka.admin.create_topics([NewTopic(name, 3, 1, config={"cleanup.policy": "compact"})])[name].result(30)
    with UserProducer(kafka, topic=name) as producer:
        positions = [producer.put(User("theirs@example.com", "Theirs")), producer.put(User("x@example.com", "X"))]
    return sorted((p.partition, p.offset) for p in positions)


def test_the_kits_own_broker_is_recognised_and_theirs_is_not(kafka: Kafka, their_kafka: Kafka) -> None:
    assert kafka.is_embedded()
    assert not their_kafka.is_embedded()


def test_their_user_topic_is_never_deleted_changed_or_compacted(
    their_kafka: Kafka, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _their_topic(their_kafka, "user")
    config = their_kafka.topic_config("user")

    for attempt in (
        lambda: their_kafka.reset_topic("user"),
        lambda: their_kafka.delete_topic("user"),
        lambda: their_kafka.alter_topic_config("user", {"segment.ms": "1000"}),
        lambda: compact(their_kafka, "user"),
    ):
        with pytest.raises(TopicNotOwnedError, match=r"not created by kafka_crud.*another topic name.*force=True"):
            attempt()
    assert main(["compact", "--bootstrap-servers", their_kafka.bootstrap_servers, "--topic", "user"]) == 1
    message = capsys.readouterr().err
    assert "not created by kafka_crud" in message
    assert "Traceback" not in message

    assert sorted((r.partition, r.offset) for r in their_kafka.read_log("user")) == before
    assert their_kafka.topic_config("user") == config


def test_serving_their_topic_writes_users_but_changes_nothing_else(their_kafka: Kafka) -> None:
    _their_topic(their_kafka, "people")
    config = their_kafka.topic_config("people")
    with UserService(their_kafka, topic="people") as service:
        service.wait_ready(30)
        assert service.get("theirs@example.com") is not None
        service.put(User("ada@example.com", "Ada"))
    assert their_kafka.topic_config("people") == config
    assert len(their_kafka.read_log("people")) == 3


def test_topics_the_kit_created_are_its_own_until_someone_recreates_them(their_kafka: Kafka) -> None:
    their_kafka.reset_topic("kit.course")  # missing: created, and recorded by its topic id
    assert their_kafka.owns("kit.course")
    their_kafka.reset_topic("kit.course")  # the kit's own: it may delete and re-create it
    compact(their_kafka, "kit.course")
    assert REGISTRY_TOPIC in their_kafka.admin.list_topics(timeout=10).topics

    # Someone deletes it and creates their own of the same name: a new topic id, not the kit's.
    their_kafka.admin.delete_topics(["kit.course"])["kit.course"].result(30)
    their_kafka._wait_until(lambda: their_kafka.partition_count("kit.course") is None, "deletion")
    _their_topic(their_kafka, "kit.course")
    assert not their_kafka.owns("kit.course")
    with pytest.raises(TopicNotOwnedError):
        their_kafka.reset_topic("kit.course")
    their_kafka.reset_topic("kit.course", force=True)  # an explicit force is the way on
    assert their_kafka.read_log("kit.course") == []
