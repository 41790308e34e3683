"""Topic administration: the compacted ``user`` topic and its teaching settings."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from .config import client_config
from .errors import ConfigError, TopicNotCompactedError

__all__ = [
    "DEFAULT_PARTITIONS",
    "DEFAULT_TOPIC",
    "TEACHING_TOPIC_CONFIG",
    "admin_client",
    "create_topic",
    "delete_topic",
    "ensure_topic",
    "partition_count",
    "reset_topic",
    "topic_config",
]

log = logging.getLogger(__name__)

DEFAULT_TOPIC = "user"
DEFAULT_PARTITIONS = 3

#: Settings for a compacted topic whose cleaning you can watch: any dirty record makes a
#: segment cleanable, no compaction lag, tombstones kept 10 s after their first cleaning.
TEACHING_TOPIC_CONFIG: dict[str, str] = {
    "cleanup.policy": "compact",
    "min.cleanable.dirty.ratio": "0.01",
    "min.compaction.lag.ms": "0",
    "delete.retention.ms": "10000",
    "segment.ms": "600000",
}

_ADMIN_TIMEOUT = 30.0


def admin_client(bootstrap_servers: str | None = None) -> AdminClient:
    """An AdminClient on the configured Kafka (see :mod:`kafka_crud.config`)."""
    # librdkafka logs through `logging`, like the kit's other clients, not straight to stderr.
    return AdminClient(client_config(bootstrap_servers, logger=logging.getLogger("kafka_crud.librdkafka")))


def _admin(admin: AdminClient | str | None) -> AdminClient:
    return admin if isinstance(admin, AdminClient) else admin_client(admin)


def partition_count(admin: AdminClient | str | None, topic: str) -> int | None:
    """How many partitions ``topic`` has, or None when it does not exist."""
    metadata = _admin(admin).list_topics(topic=topic, timeout=_ADMIN_TIMEOUT)
    info = metadata.topics.get(topic)
    if info is None or info.error is not None and info.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
        return None
    if info.error is not None:
        raise KafkaException(info.error)
    return len(info.partitions)


def topic_config(admin: AdminClient | str | None, topic: str) -> dict[str, str]:
    """The topic's effective configuration (its own settings over the broker's defaults)."""
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    # Keep the client referenced until the answer is in: a collected client fails its futures.
    client = _admin(admin)
    future = client.describe_configs([resource], request_timeout=_ADMIN_TIMEOUT)[resource]
    return {name: entry.value for name, entry in future.result(timeout=_ADMIN_TIMEOUT).items()}


def create_topic(
    admin: AdminClient | str | None,
    topic: str,
    *,
    partitions: int = DEFAULT_PARTITIONS,
    config: Mapping[str, str] | None = None,
) -> None:
    """Create a compacted topic with the teaching settings (plus ``config``) and wait until it is usable."""
    client = _admin(admin)
    settings = {**TEACHING_TOPIC_CONFIG, **(config or {})}
    new = NewTopic(topic, num_partitions=partitions, replication_factor=-1, config=settings)
    future = client.create_topics([new], request_timeout=_ADMIN_TIMEOUT)[topic]
    future.result(timeout=_ADMIN_TIMEOUT)
    _wait_until(lambda: partition_count(client, topic) == partitions, f"topic {topic!r} to appear")


def ensure_topic(
    admin: AdminClient | str | None = None,
    topic: str = DEFAULT_TOPIC,
    *,
    partitions: int = DEFAULT_PARTITIONS,
    config: Mapping[str, str] | None = None,
) -> int:
    """Make sure ``topic`` exists and is compacted; return its partition count.

    A missing topic is created with the teaching settings. An existing topic is left as it is,
    but one whose ``cleanup.policy`` is not compact raises :class:`TopicNotCompactedError`:
    using it as a table would silently lose users when retention deletes old segments.
    """
    client = _admin(admin)
    count = partition_count(client, topic)
    if count is None:
        try:
            create_topic(client, topic, partitions=partitions, config=config)
            log.info("Created compacted topic %r with %d partitions", topic, partitions)
            return partitions
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
            count = partition_count(client, topic) or partitions
    policy = topic_config(client, topic).get("cleanup.policy", "")
    if "compact" not in policy.split(","):
        raise TopicNotCompactedError(
            f"Topic {topic!r} exists with cleanup.policy={policy!r}, not compact: retention would delete "
            "users. Use another topic, or make it compacted yourself: kafka-configs.sh --alter "
            f"--entity-type topics --entity-name {topic} --add-config cleanup.policy=compact"
        )
    return count


def delete_topic(admin: AdminClient | str | None, topic: str) -> None:
    """Delete ``topic`` if it exists and wait until it is gone."""
    client = _admin(admin)
    try:
        client.delete_topics([topic], request_timeout=_ADMIN_TIMEOUT)[topic].result(timeout=_ADMIN_TIMEOUT)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise
    _wait_until(lambda: partition_count(client, topic) is None, f"topic {topic!r} to be deleted")


def reset_topic(
    admin: AdminClient | str | None = None,
    topic: str = DEFAULT_TOPIC,
    *,
    partitions: int = DEFAULT_PARTITIONS,
    config: Mapping[str, str] | None = None,
) -> None:
    """Delete and re-create ``topic``: a clean, empty compacted topic for a demo."""
    client = _admin(admin)
    delete_topic(client, topic)
    # Creating a topic right after deleting it can race the deletion's cleanup on the broker.
    deadline = time.monotonic() + _ADMIN_TIMEOUT
    while True:
        try:
            create_topic(client, topic, partitions=partitions, config=config)
            return
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _wait_until(check: object, what: str, timeout: float = _ADMIN_TIMEOUT) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise ConfigError(f"Timed out after {timeout:.0f} s waiting for {what}: is the broker healthy?")
        time.sleep(0.05)
