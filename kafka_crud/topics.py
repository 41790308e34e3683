"""Topic administration, and the rule that protects what is not the kit's.

The kit creates compacted topics with teaching settings, and deletes, re-creates and
re-configures topics for its lessons. It does that only to topics that are its own:

- on a broker the kit started itself (:class:`~kafka_crud.LocalKafka`, recognised by the
  cluster id it formats the broker's storage with), every topic is the kit's;
- on any other cluster, a topic is the kit's only if the kit created it: it records the
  topic's id (the one Kafka gives a topic at creation, new each time a topic of that name is
  created) in the compacted topic ``kafka-crud.topics``. A topic someone else created, or
  re-created since, has another id.

Deleting, re-creating or re-configuring any other topic raises
:class:`~kafka_crud.TopicNotOwnedError`, which says how to go on: another topic name, or
``force=True`` for a topic that is yours to lose. Creating a missing topic, and writing users
to an existing one (which is what serving it means), are always allowed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

from . import running
from .errors import (
    KafkaCrudError,
    KafkaUnavailableError,
    TopicNotCompactedError,
    TopicNotFoundError,
    TopicNotOwnedError,
)

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

    from .records import LogRecord

__all__ = [
    "DEFAULT_PARTITIONS",
    "DEFAULT_TOPIC",
    "EMBEDDED_CLUSTER_PREFIX",
    "REGISTRY_TOPIC",
    "TEACHING_TOPIC_CONFIG",
    "TopicAdmin",
]

log = logging.getLogger(__name__)

DEFAULT_TOPIC = "user"
DEFAULT_PARTITIONS = 3

#: Settings for a compacted topic whose cleaning you can watch: any dirty record makes a
#: segment cleanable, no compaction lag, tombstones kept 10 s after their first cleaning.
#: A segment still rolls only on the first append after ``segment.ms`` (10 minutes): until
#: then the cleaner has nothing it may clean (:func:`kafka_crud.compact` rolls it at once).
TEACHING_TOPIC_CONFIG: dict[str, str] = {
    "cleanup.policy": "compact",
    "min.cleanable.dirty.ratio": "0.01",
    "min.compaction.lag.ms": "0",
    "delete.retention.ms": "10000",
    "segment.ms": "600000",
}

#: Where the kit records the ids of the topics it created on a cluster it did not start.
REGISTRY_TOPIC = "kafka-crud.topics"

#: The start of every cluster id :class:`~kafka_crud.LocalKafka` formats a broker with: the
#: base64 of b"kafkacrud", then random bytes (a Kafka cluster id is 16 bytes in base64).
EMBEDDED_CLUSTER_PREFIX = "a2Fma2FjcnVk"


def _started_here() -> Path:
    """The file where LocalKafka notes the id of every cluster it started on this machine.

    It covers data dirs formatted before cluster ids carried :data:`EMBEDDED_CLUSTER_PREFIX`.
    """
    from .jvm import cache_dir

    return cache_dir() / "clusters-started-here"


def note_started_here(cluster_id: str) -> None:
    """Record that the kit started the cluster ``cluster_id`` on this machine."""
    path = _started_here()
    try:
        known = set(path.read_text(encoding="utf-8").split()) if path.exists() else set()
        if cluster_id not in known:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as handle:
                handle.write(cluster_id + "\n")
    except OSError as exc:
        log.debug("Could not note cluster %s: %s", cluster_id, exc)


def started_here(cluster_id: str) -> bool:
    """Whether the kit formatted or started the cluster ``cluster_id`` (see :func:`note_started_here`)."""
    if cluster_id.startswith(EMBEDDED_CLUSTER_PREFIX):
        return True
    try:
        return cluster_id in _started_here().read_text(encoding="utf-8").split()
    except OSError:
        return False


class TopicAdmin:
    """Topic administration for :class:`~kafka_crud.Kafka` (which it is part of)."""

    bootstrap_servers: str
    timeout: float
    _embedded: bool | None = None

    if TYPE_CHECKING:  # provided by Kafka
        @property
        def admin(self) -> AdminClient: ...
        def errors(self, doing: str) -> Any: ...
        def partition_count(self, topic: str) -> int | None: ...
        def topic_config(self, topic: str) -> dict[str, str]: ...
        def read_log(self, topic: str = DEFAULT_TOPIC, **options: Any) -> list[LogRecord]: ...
        def producer(self, **overrides: object) -> Any: ...
        def client_config(self, **overrides: object) -> dict[str, Any]: ...

    # -- whose topic ---------------------------------------------------------------------------
    def is_embedded(self) -> bool:
        """True when the kit started this cluster itself (:class:`~kafka_crud.LocalKafka`)."""
        if self._embedded is None:
            with self.errors("describing the cluster"):
                cluster = self.admin.describe_cluster(request_timeout=self.timeout).result(timeout=self.timeout)
            self._embedded = started_here(str(cluster.cluster_id))
        return self._embedded

    def topic_id(self, topic: str) -> str | None:
        """The id Kafka gave ``topic`` when it was created, or None when it does not exist."""
        try:
            with self.errors(f"describing topic {topic!r}"):
                futures = self.admin.describe_topics(TopicCollection([topic]), request_timeout=self.timeout)
                description = futures[topic].result(timeout=self.timeout)
        except TopicNotFoundError:
            return None
        return str(description.topic_id)

    def owns(self, topic: str) -> bool:
        """Whether ``topic`` is the kit's to delete or re-configure (see :mod:`kafka_crud.topics`)."""
        if self.is_embedded():
            return True
        current = self.topic_id(topic)
        if current is None:
            return True  # nothing there to destroy
        return self._registered().get(topic) == current

    def require_owned(self, topic: str, doing: str, *, force: bool = False) -> None:
        """Raise :class:`~kafka_crud.TopicNotOwnedError` unless ``topic`` is the kit's, or ``force``."""
        if force or self.owns(topic):
            return
        raise TopicNotOwnedError(
            f"Topic {topic!r} on {self.bootstrap_servers} was not created by kafka_crud, so the kit will not "
            f"{doing} it. Use another topic name (say {topic + '.kafka-crud'!r}), or pass force=True "
            "(--force on the command line) if its records are yours to lose."
        )

    def _registered(self) -> dict[str, str]:
        if self.partition_count(REGISTRY_TOPIC) is None:
            return {}
        ids: dict[str, str] = {}
        for record in self.read_log(REGISTRY_TOPIC):
            if record.key is None:
                continue
            name = record.key.decode("utf-8", "replace")
            if record.value is None:
                ids.pop(name, None)
            else:
                ids[name] = json.loads(record.value).get("topic_id", "")
        return ids

    def _register(self, topic: str) -> None:
        """Record that the kit created ``topic`` (on clusters it did not start)."""
        if self.is_embedded() or topic == REGISTRY_TOPIC:
            return
        if self.partition_count(REGISTRY_TOPIC) is None:
            try:
                self._create(REGISTRY_TOPIC, 1, {"cleanup.policy": "compact"})
            except KafkaCrudError as exc:
                if not _already_exists(exc):
                    raise
        producer = self.producer(**{"linger.ms": 0})
        value = json.dumps({"topic_id": self.topic_id(topic), "created_ms": int(time.time() * 1000)})
        producer.produce(REGISTRY_TOPIC, key=topic.encode(), value=value.encode())
        if producer.flush(self.timeout) != 0:
            raise KafkaUnavailableError(
                f"Created topic {topic!r} but could not record it in {REGISTRY_TOPIC!r} on {self.bootstrap_servers} "
                f"within {self.timeout:.0f} s: the kit will treat it as not its own"
            )

    # -- topics --------------------------------------------------------------------------------
    def create_topic(
        self, topic: str, *, partitions: int = DEFAULT_PARTITIONS, config: Mapping[str, str] | None = None,
        assignment: list[list[int]] | None = None,
    ) -> None:
        """Create a compacted topic with the teaching settings (plus ``config``); wait until usable.

        ``assignment``: the node ids holding each partition, preferred leader first (e.g.
        ``[[1, 2, 3]]``: one partition, led by node 1); by default the broker places the replicas,
        as many as its ``default.replication.factor``.
        """
        if assignment is not None:
            partitions = len(assignment)
        self._create(topic, partitions, {**TEACHING_TOPIC_CONFIG, **(config or {})}, assignment)
        self._register(topic)

    def _create(
        self, topic: str, partitions: int, settings: Mapping[str, str], assignment: list[list[int]] | None = None,
    ) -> None:
        if assignment is not None:
            new = NewTopic(topic, num_partitions=partitions, replica_assignment=assignment, config=dict(settings))
        else:
            new = NewTopic(topic, num_partitions=partitions, replication_factor=-1, config=dict(settings))
        with self.errors(f"creating topic {topic!r}"):
            self.admin.create_topics([new], request_timeout=self.timeout)[topic].result(timeout=self.timeout)
        self._wait_until(lambda: self.partition_count(topic) == partitions, f"topic {topic!r} to appear")
        self._wait_on_every_broker(topic, partitions, f"every broker to know of topic {topic!r}")

    def ensure_topic(
        self, topic: str = DEFAULT_TOPIC, *, partitions: int = DEFAULT_PARTITIONS,
        config: Mapping[str, str] | None = None,
    ) -> int:
        """Make sure ``topic`` exists and is compacted; return its partition count.

        A missing topic is created with the teaching settings. An existing topic is left as it
        is, but one whose ``cleanup.policy`` is not compact raises :class:`TopicNotCompactedError`:
        using it as a table would lose users when retention deletes old segments.
        """
        count = self.partition_count(topic)
        if count is None:
            try:
                self.create_topic(topic, partitions=partitions, config=config)
                log.info("Created compacted topic %r with %d partitions", topic, partitions)
                return partitions
            except KafkaCrudError as exc:  # created meanwhile by someone else: use theirs
                if not _already_exists(exc):
                    raise
                count = self.partition_count(topic) or partitions
        self.require_compacted(topic)
        return count

    def require_compacted(self, topic: str) -> None:
        """Raise :class:`TopicNotCompactedError` unless ``topic``'s cleanup.policy includes compact."""
        policy = self.topic_config(topic).get("cleanup.policy", "")
        if "compact" not in policy.split(","):
            raise TopicNotCompactedError(
                f"Topic {topic!r} exists with cleanup.policy={policy!r}, not compact: retention would delete "
                "users and the cleaner never compacts it. Use another topic, or make it compacted yourself: "
                f"kafka-configs.sh --alter --entity-type topics --entity-name {topic} "
                "--add-config cleanup.policy=compact"
            )

    def delete_topic(self, topic: str, *, force: bool = False) -> None:
        """Delete ``topic`` if it exists and wait until it is gone; only a topic of the kit's (or ``force``).

        What this process runs on it (servers, consumers) is stopped first (:mod:`kafka_crud.running`).
        """
        self.require_owned(topic, "delete", force=force)
        running.stop_on_topic(self.bootstrap_servers, topic)
        try:
            with self.errors(f"deleting topic {topic!r}"):
                self.admin.delete_topics([topic], request_timeout=self.timeout)[topic].result(timeout=self.timeout)
        except TopicNotFoundError:
            pass
        self._wait_until(lambda: self.partition_count(topic) is None, f"topic {topic!r} to be deleted")
        self._wait_on_every_broker(topic, None, f"every broker to forget topic {topic!r}")

    def reset_topic(
        self, topic: str = DEFAULT_TOPIC, *, partitions: int = DEFAULT_PARTITIONS,
        config: Mapping[str, str] | None = None, force: bool = False,
    ) -> None:
        """Delete and re-create ``topic``: a clean, empty compacted topic for a demo.

        Only a topic of the kit's is deleted (see :mod:`kafka_crud.topics`); a missing one is created.
        """
        self.require_owned(topic, "delete and re-create", force=force)
        self.delete_topic(topic, force=True)
        # Creating a topic right after deleting it can race the deletion's cleanup on the broker.
        deadline = time.monotonic() + 30.0
        while True:
            try:
                self.create_topic(topic, partitions=partitions, config=config)
                return
            except KafkaCrudError as exc:
                if not _already_exists(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def alter_topic_config(
        self, topic: str, settings: Mapping[str, str | None], *, force: bool = False,
    ) -> None:
        """Set (or, for None, remove) settings of a topic of the kit's; returns once the broker reports them."""
        self.require_owned(topic, "re-configure", force=force)
        entries = [
            ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
            if value is not None
            else ConfigEntry(name, None, incremental_operation=AlterConfigOpType.DELETE)
            for name, value in settings.items()
        ]
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=entries)
        with self.errors(f"changing the configuration of {topic!r}"):
            for future in self.admin.incremental_alter_configs([resource], request_timeout=self.timeout).values():
                future.result(timeout=self.timeout)
        wanted = {name: value for name, value in settings.items() if value is not None}

        def applied() -> bool:
            now = self.topic_config(topic)
            return all(_same(now.get(name), value) for name, value in wanted.items())

        self._wait_until(applied, f"the broker to apply {wanted} to {topic!r}")

    def _wait_on_every_broker(self, topic: str, partitions: int | None, what: str) -> None:
        """On a cluster, wait until each broker's metadata has ``topic`` with ``partitions`` partitions,
        each with a leader (None: without the topic). Every broker learns of a created or deleted
        topic from the metadata log on its own, a few milliseconds apart: a request answered by one
        that has not yet would find no such topic, or still find it."""
        from confluent_kafka.admin import AdminClient

        with self.errors("asking for the cluster's metadata"):
            brokers = self.admin.list_topics(timeout=self.timeout).brokers
        if len(brokers) <= 1:
            return
        # A new client's first request goes to its one bootstrap address: one client per broker.
        probes = [AdminClient(self.client_config(**{"bootstrap.servers": f"{b.host}:{b.port}"}))
                  for b in brokers.values()]

        def seen(probe: AdminClient) -> bool:
            try:
                info = probe.list_topics(topic=topic, timeout=self.timeout).topics.get(topic)
            except KafkaException:
                return False
            if info is None or info.error is not None or not info.partitions:
                return partitions is None
            return len(info.partitions) == partitions and all(m.leader >= 0 for m in info.partitions.values())

        self._wait_until(lambda: all(seen(probe) for probe in probes), what)

    def _wait_until(self, check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise KafkaUnavailableError(
                    f"Timed out after {timeout:.0f} s waiting for {what} on {self.bootstrap_servers}: "
                    "is the broker healthy?"
                )
            time.sleep(0.05)


def _already_exists(exc: BaseException) -> bool:
    cause = exc if isinstance(exc, KafkaException) else exc.__cause__
    return (
        isinstance(cause, KafkaException)
        and isinstance(cause.args[0], KafkaError)
        and cause.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS
    )


def _same(reported: str | None, wanted: str) -> bool:
    """Whether the broker reports ``wanted`` (it writes a ratio of "0" as "0.0")."""
    if reported == wanted:
        return True
    try:
        return reported is not None and float(reported) == float(wanted)
    except ValueError:
        return False
