"""One connection to one Kafka cluster: every client the kit opens is built here.

    kafka = connect()                      # KAFKA_BOOTSTRAP_SERVERS + KAFKA_CRUD_CLIENT_CONFIG
    kafka.ensure_topic("user")
    kafka.read_log("user")                 # every record now in the topic
    kafka.watermarks("user")               # {partition: Watermarks(low, high)}

A :class:`Kafka` resolves the address and the extra librdkafka settings once, owns one
AdminClient (created on first use), builds producers and consumers with the kit's defaults
(the logger, the reconnect backoff, the partitioner), and is the one home of topic
administration and of offset and metadata reads. Every librdkafka error raised here reaches
you as a kit error (:mod:`kafka_crud.errors`) that names the address and what to do.

Words, used the same way everywhere in the kit (see :mod:`kafka_crud.records` for the records'):

- **log start offset** (``low``): the first offset still in the partition. Compaction does not
  move it: it stays 0 even when the first records have been cleaned away.
- **end offset** (``high``, the high watermark): the offset after the last record a consumer
  may read. With one in-sync replica, as on the embedded broker, it is also the log end offset,
  the offset the next record will get; on a replicated cluster the leader may hold records
  beyond it that are not yet on every in-sync replica.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    OffsetSpec,
)

from .config import client_config
from .errors import (
    CONTACT_ERRORS,
    CONTACT_TIMEOUT,
    ConfigError,
    KafkaUnavailableError,
    TopicNotFoundError,
    contact_problem,
    map_kafka_errors,
)
from .reading import LogReader
from .topics import DEFAULT_PARTITIONS, DEFAULT_TOPIC, TEACHING_TOPIC_CONFIG, TopicAdmin

__all__ = [
    "DEFAULT_PARTITIONS",
    "DEFAULT_TOPIC",
    "TEACHING_TOPIC_CONFIG",
    "GroupOffset",
    "Kafka",
    "KafkaLike",
    "Watermarks",
    "connect",
]

log = logging.getLogger(__name__)
_librdkafka_log = logging.getLogger("kafka_crud.librdkafka")

# A partition just created, or a broker just restarted, answers these until its leader is up.
# A topic deleted and re-created under the same name also answers a leader epoch mismatch while
# the client's metadata still has the old topic's epoch.
_LEADER_NOT_READY = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.NOT_COORDINATOR,
    KafkaError.UNKNOWN_LEADER_EPOCH,
    KafkaError.FENCED_LEADER_EPOCH,
}


class Watermarks(NamedTuple):
    """A partition's offsets as the broker reports them."""

    low: int
    """The log start offset: the first offset still in the partition."""
    high: int
    """The end offset (high watermark): the offset after the last record a consumer may read."""


class GroupOffset(NamedTuple):
    """Where a consumer group stands in one partition."""

    group: str
    """The group id."""
    topic: str
    """The topic."""
    partition: int
    """The partition."""
    committed: int | None
    """The offset the group resumes from (the next record to read); None without a commit."""
    end_offset: int | None
    """The partition's end offset; None when the topic is gone since the group committed."""

    @property
    def lag(self) -> int | None:
        """Offsets (not records: compaction leaves gaps) between ``committed`` and the end."""
        return None if self.committed is None or self.end_offset is None else self.end_offset - self.committed


class Kafka(TopicAdmin, LogReader):
    """A connection to one Kafka cluster, shared by every client the kit opens on it.

    Args:
        bootstrap_servers: ``host:port[,host:port]``; by default ``KAFKA_BOOTSTRAP_SERVERS``.
        config: librdkafka settings on top of ``KAFKA_CRUD_CLIENT_CONFIG`` (dotted names).
        timeout: seconds a metadata or admin request may take before a
            :class:`~kafka_crud.KafkaUnavailableError` says Kafka did not answer.
        environment: read ``KAFKA_BOOTSTRAP_SERVERS`` and ``KAFKA_CRUD_CLIENT_CONFIG``; the
            embedded broker's connection does not (its listener is plain TCP on loopback).

    Thread-safe: librdkafka clients may be shared between threads.
    """

    def __init__(
        self,
        bootstrap_servers: str | None = None,
        *,
        config: Mapping[str, object] | None = None,
        timeout: float = 10.0,
        environment: bool = True,
    ) -> None:
        if environment:
            self._config = client_config(bootstrap_servers, **dict(config or {}))
        elif not bootstrap_servers:
            raise ConfigError("Kafka(environment=False) needs bootstrap_servers")
        else:
            self._config = {"bootstrap.servers": bootstrap_servers, **dict(config or {})}
        self.bootstrap_servers: str = str(self._config["bootstrap.servers"])
        """The address every client of this connection uses."""
        self.timeout = timeout
        self._admin: AdminClient | None = None
        self._lock = threading.Lock()
        self._contact_errors: list[tuple[float, KafkaError]] = []

    @classmethod
    def of(cls, kafka: KafkaLike = None) -> Kafka:
        """``kafka`` itself, or a connection to the address it names (None: the environment's)."""
        return kafka if isinstance(kafka, Kafka) else cls(kafka)

    def __repr__(self) -> str:
        return f"<Kafka {self.bootstrap_servers}>"

    # -- clients -----------------------------------------------------------------------------
    def client_config(self, **overrides: object) -> dict[str, Any]:
        """librdkafka settings for a client of this connection; ``overrides`` use dotted names."""
        return {
            **self._config,
            # librdkafka logs through `logging`, not straight to stderr (a notebook's output).
            "logger": _librdkafka_log,
            # After a broker restart, reconnect within a second, not librdkafka's 10 s backoff.
            "reconnect.backoff.max.ms": 1000,
            **overrides,
        }

    @property
    def admin(self) -> AdminClient:
        """This connection's AdminClient, created on first use.

        Created, it must get the cluster's metadata within :data:`CONTACT_TIMEOUT` s (or
        ``timeout``, when shorter): else a :class:`~kafka_crud.KafkaUnavailableError` names the
        address and the likely cause (nothing listens, the login was refused, the TLS handshake
        failed) as soon as librdkafka reports it, instead of letting each request time out.
        """
        with self._lock:
            if self._admin is None:
                admin = AdminClient(self.client_config(error_cb=self._on_contact_error))
                self._first_contact(admin)
                self._admin = admin
            return self._admin

    def _on_contact_error(self, err: KafkaError) -> None:
        if not self._admin and err.code() in CONTACT_ERRORS:
            self._contact_errors.append((time.monotonic(), err))

    def _first_contact(self, admin: AdminClient) -> None:
        started = time.monotonic()
        deadline = started + min(self.timeout, CONTACT_TIMEOUT)
        while True:
            try:
                admin.list_topics(timeout=0.25)
                self._contact_errors.clear()
                return
            except KafkaException:
                pass
            admin.poll(0)  # serves error_cb
            now = time.monotonic()
            problem = contact_problem(self._contact_errors, self.bootstrap_servers, now - started, now >= deadline,
                                      str(self._config.get("security.protocol", "PLAINTEXT")).upper())
            if problem is not None:
                self._contact_errors.clear()
                raise problem

    def producer(self, **overrides: object) -> Producer:
        """A raw confluent-kafka Producer with the kit's defaults: acks=all, murmur2 like Java's.

        The partitioner is the Java client's (murmur2 of the key), not librdkafka's CRC32
        default: every client that writes a topic must send a key to the same partition.
        """
        return Producer(self.client_config(**{"acks": "all", "partitioner": "murmur2_random", **overrides}))

    def consumer(self, **overrides: object) -> Consumer:
        """A raw Consumer for reading by assignment: a throwaway group id, no commits, EOF events."""
        return Consumer(self.client_config(**{
            # Required by the client, never used: partitions are assigned, offsets not committed.
            "group.id": f"kafka-crud-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            **overrides,
        }))

    def errors(self, doing: str) -> Any:
        """A context manager that turns librdkafka errors into kit errors naming this address."""
        return map_kafka_errors(doing, self.bootstrap_servers)

    # -- metadata ------------------------------------------------------------------------------
    def partitions(self, topic: str) -> list[int] | None:
        """The topic's partition numbers, or None when it does not exist."""
        with self.errors(f"reading the metadata of {topic!r}"):
            metadata = self.admin.list_topics(topic=topic, timeout=self.timeout)
        info = metadata.topics.get(topic)
        if info is None or (info.error is not None and info.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
            return None
        if info.error is not None:
            with self.errors(f"reading the metadata of {topic!r}"):
                raise KafkaException(info.error)
        return sorted(info.partitions)

    def partition_count(self, topic: str) -> int | None:
        """How many partitions ``topic`` has, or None when it does not exist."""
        partitions = self.partitions(topic)
        return None if partitions is None else len(partitions)

    def require_partitions(self, topic: str) -> list[int]:
        """The topic's partitions; :class:`~kafka_crud.TopicNotFoundError` when it does not exist."""
        partitions = self.partitions(topic)
        if partitions is None:
            raise TopicNotFoundError(
                f"Topic {topic!r} does not exist on {self.bootstrap_servers}: create it first "
                "(kafka.ensure_topic(...), or start `kafka-crud serve`, which creates it)"
            )
        return partitions

    def watermarks(self, topic: str) -> dict[int, Watermarks]:
        """Per partition (in order): the log start offset and the end offset. The kit's one way to read them."""
        partitions = self.require_partitions(topic)
        low = self._list_offsets(topic, partitions, OffsetSpec.earliest())  # type: ignore[no-untyped-call]
        high = self._list_offsets(topic, partitions, OffsetSpec.latest())  # type: ignore[no-untyped-call]
        return {p: Watermarks(low[p], high[p]) for p in partitions}

    def end_offsets(self, topic: str, partitions: Iterable[int]) -> dict[int, int]:
        """The end offset of each of ``partitions``: one request, where :meth:`watermarks` makes two."""
        return self._list_offsets(topic, sorted(partitions), OffsetSpec.latest())  # type: ignore[no-untyped-call]

    def _list_offsets(self, topic: str, partitions: list[int], spec: OffsetSpec) -> dict[int, int]:
        request = {TopicPartition(topic, p): spec for p in partitions}
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                futures = self.admin.list_offsets(request, request_timeout=self.timeout)
                return {tp.partition: f.result(timeout=self.timeout).offset for tp, f in futures.items()}
            except KafkaException as exc:
                if exc.args[0].code() not in _LEADER_NOT_READY or time.monotonic() > deadline:
                    with self.errors(f"reading the offsets of {topic!r}"):
                        raise
            time.sleep(0.1)

    def topic_config(self, topic: str) -> dict[str, str]:
        """The topic's effective configuration (its own settings over the broker's defaults)."""
        return {name: entry.value or "" for name, entry in self._describe(topic).items()}

    def _describe(self, topic: str) -> dict[str, ConfigEntry]:
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
        with self.errors(f"reading the configuration of {topic!r}"):
            future = self.admin.describe_configs([resource], request_timeout=self.timeout)[resource]
            result: dict[str, ConfigEntry] = future.result(timeout=self.timeout)
        return result

    def own_topic_config(self, topic: str) -> dict[str, str]:
        """Only the settings set on the topic itself, not those it inherits from the broker."""
        return {
            name: entry.value or "" for name, entry in self._describe(topic).items()
            if getattr(entry.source, "value", entry.source) == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
        }

    def broker_configs(self) -> tuple[str, dict[int, dict[str, str]]]:
        """The cluster id, and every broker's settings by node id."""
        with self.errors("describing the cluster"):
            cluster = self.admin.describe_cluster(request_timeout=self.timeout).result(timeout=self.timeout)
            configs: dict[int, dict[str, str]] = {}
            for node in cluster.nodes:
                resource = ConfigResource(ConfigResource.Type.BROKER, str(node.id))
                entries = self.admin.describe_configs([resource], request_timeout=self.timeout)[resource]
                configs[node.id] = {k: e.value for k, e in entries.result(timeout=self.timeout).items()}
        return str(cluster.cluster_id), configs

    def ping(self) -> int:
        """How many brokers answer; :class:`~kafka_crud.KafkaUnavailableError` when none does."""
        with self.errors("asking for the cluster's metadata"):
            brokers = self.admin.list_topics(timeout=self.timeout).brokers
        if not brokers:
            raise KafkaUnavailableError(f"No broker answered at {self.bootstrap_servers}")
        return len(brokers)

    def group_offsets(self, groups: Iterable[str] | None = None, *, topic: str | None = None) -> list[GroupOffset]:
        """Consumer groups' committed offsets beside the end offsets, for every partition of each
        topic a group has committed on (``topic``: only that one; ``groups``: by default every
        group the broker knows). The kit's own readers assign partitions and never commit: they
        are not groups.
        """
        with self.errors("listing consumer groups"):
            if groups is None:
                listing = self.admin.list_consumer_groups(request_timeout=self.timeout).result(timeout=self.timeout)
                groups = sorted(g.group_id for g in listing.valid)
            committed: dict[tuple[str, str, int], int | None] = {}
            for group in groups:
                request = [ConsumerGroupTopicPartitions(group)]
                futures = self.admin.list_consumer_group_offsets(request, request_timeout=self.timeout)
                for tp in futures[group].result(timeout=self.timeout).topic_partitions or []:
                    if tp.error is not None:
                        raise KafkaException(tp.error)
                    if topic is None or tp.topic == topic:
                        committed[(group, tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else None
        result: list[GroupOffset] = []
        for name in sorted({t for _, t, _ in committed}):
            try:
                ends: dict[int, int | None] = {p: w.high for p, w in self.watermarks(name).items()}
            except TopicNotFoundError:  # deleted since the group committed
                ends = {p: None for _, t, p in committed if t == name}
            for group in sorted({g for g, t, _ in committed if t == name}):
                for partition, end in ends.items():
                    result.append(GroupOffset(group, name, partition, committed.get((group, name, partition)), end))
        return result

    # -- reading -------------------------------------------------------------------------------


#: What every public function that talks to Kafka accepts: a connection, an address, or None.
KafkaLike = Kafka | str | None


def connect(bootstrap_servers: str | None = None, **config: object) -> Kafka:
    """A :class:`Kafka` connection: to ``bootstrap_servers``, else ``KAFKA_BOOTSTRAP_SERVERS``.

    ``config``: extra librdkafka settings, e.g. ``connect(**{"security.protocol": "SSL"})``.
    """
    return Kafka(bootstrap_servers, config=config)
