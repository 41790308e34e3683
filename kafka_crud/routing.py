"""Where a partition is served, in the partitioned design: the group's assignment and the instances' URLs.

Two sources, each authoritative for one thing:

- **who owns a partition**: the consumer group, as its coordinator describes it
  (``DescribeGroups``: every member, its ``group.instance.id`` and its assigned partitions). With
  the classic protocol the group's leader member computes the assignment (here with the range
  assignor) and the coordinator hands it out; the description is what the members were given.
- **where an instance answers**: a small compacted topic, ``kafka-crud.instances``, in which each
  instance publishes its URL under the key ``<group>/<group.instance.id>`` before it joins the
  group, and a tombstone when it stops. Every instance follows that topic. (The article carried
  the URL in the group's member metadata; librdkafka's Python client cannot set it.)

A description is a second old at most (taken again at once after a rebalance of this instance).
An owner whose URL does not accept a connection (checked before every redirect) is reported as
unreachable, so a client gets a 503 with ``Retry-After`` (the group gives the partition to
another member once the owner's ``session.timeout.ms`` has passed) rather than a redirect to a
dead address. An owner that dies between that check and the client's next request still
leaves the client a refused connection: a client of many instances retries those too.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from confluent_kafka import OFFSET_BEGINNING, ConsumerGroupState, KafkaError, TopicPartition

from .connection import Kafka
from .errors import KafkaCrudError, NotReadyError, PartitionMovingError
from .producer import UserProducer

__all__ = ["INSTANCES_TOPIC", "GroupView", "InstanceRegistry", "Router", "fetch_json", "instance_id", "wait_settled"]

log = logging.getLogger(__name__)

#: The compacted topic of instance URLs.
INSTANCES_TOPIC = "kafka-crud.instances"
_VIEW_TTL = 1.0
_REFUSED_TTL = 1.0


class InstanceRegistry:
    """The URL of every instance of every group, from the compacted topic :data:`INSTANCES_TOPIC`."""

    def __init__(self, kafka: Kafka, *, topic: str = INSTANCES_TOPIC) -> None:
        self.kafka = kafka
        self.topic = topic
        self._urls: dict[str, str] = {}
        self._lock = threading.Condition()
        self._next = 0  # the next offset of the registry's partition to read
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._producer: UserProducer | None = None

    def start(self) -> InstanceRegistry:
        self.kafka.ensure_topic(self.topic, partitions=1)
        self._producer = UserProducer(self.kafka, topic=self.topic, timeout=self.kafka.timeout)
        consumer = self.kafka.consumer(**{"fetch.wait.max.ms": 100})
        consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
        self._thread = threading.Thread(target=self._follow, args=(consumer,), name="kafka-crud-registry",
                                        daemon=True)
        self._thread.start()
        return self

    def _follow(self, consumer: Any) -> None:
        try:
            while not self._stop.is_set():
                msg = consumer.poll(0.1)
                if msg is None:
                    continue
                if msg.error() is not None:
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        with self._lock:
                            self._next = max(self._next, msg.offset())
                            self._lock.notify_all()
                    else:
                        log.warning("Instance registry: %s", msg.error().str())
                    continue
                key = (msg.key() or b"").decode("utf-8", "replace")
                with self._lock:
                    self._next = max(self._next, msg.offset() + 1)
                    self._lock.notify_all()
                    if msg.value() is None:
                        self._urls.pop(key, None)
                    else:
                        try:
                            self._urls[key] = str(json.loads(msg.value())["url"])
                        except (ValueError, KeyError, TypeError):
                            log.warning("Instance registry: %r has no URL: %r", key, msg.value()[:80])
        finally:
            consumer.close()

    def publish(self, group: str, instance: str, url: str, **about: object) -> None:
        """Publish ``instance``'s URL for ``group``; returns once Kafka acknowledged it."""
        assert self._producer is not None, "start() the registry first"
        value = json.dumps({"url": url, "group": group, "instance": instance, **about}).encode()
        self._producer.send(f"{group}/{instance}", value)
        with self._lock:
            self._urls[f"{group}/{instance}"] = url

    def withdraw(self, group: str, instance: str) -> None:
        """Write a tombstone for ``instance``'s URL."""
        if self._producer is not None:
            try:
                self._producer.send(f"{group}/{instance}", None)
            except KafkaCrudError as exc:
                log.warning("Could not withdraw %s/%s from %s: %s", group, instance, self.topic, exc)

    def urls(self, group: str) -> dict[str, str]:
        """{group.instance.id: URL} of ``group``'s instances, as far as this registry has read."""
        prefix = f"{group}/"
        with self._lock:
            return {k.removeprefix(prefix): v for k, v in sorted(self._urls.items()) if k.startswith(prefix)}

    def url(self, group: str, instance: str, timeout: float = 2.0) -> str | None:
        """``instance``'s URL; when not known yet, first catch up with the registry's end (a published URL
        may not have been read yet: every instance follows the registry on its own)."""
        url = self.urls(group).get(instance)
        if url is not None:
            return url
        end = self.kafka.end_offsets(self.topic, [0])[0]
        with self._lock:
            self._lock.wait_for(lambda: self._next >= end, timeout)
        return self.urls(group).get(instance)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._producer is not None:
            self._producer.close()
            self._producer = None


@dataclass(frozen=True)
class GroupView:
    """The group as its coordinator described it: its state and who holds which partition."""

    state: str
    """``Stable``, ``PreparingRebalance``, ``CompletingRebalance``, ``Empty``, ``Dead`` or ``Unknown``."""
    members: dict[str, list[int]]
    """{group.instance.id (or member id): the partitions of the topic assigned to it}."""
    taken: float = field(default_factory=time.monotonic)

    @property
    def owners(self) -> dict[int, str]:
        return {p: member for member, partitions in self.members.items() for p in partitions}


_STATES = {
    ConsumerGroupState.STABLE: "Stable",
    ConsumerGroupState.PREPARING_REBALANCING: "PreparingRebalance",
    ConsumerGroupState.COMPLETING_REBALANCING: "CompletingRebalance",
    ConsumerGroupState.EMPTY: "Empty",
    ConsumerGroupState.DEAD: "Dead",
}


class Router:
    """Which instance's URL serves a partition of ``topic`` now, for the instances of ``group``."""

    def __init__(self, kafka: Kafka, group: str, topic: str, registry: InstanceRegistry) -> None:
        self.kafka = kafka
        self.group = group
        self.topic = topic
        self.registry = registry
        self._lock = threading.Lock()
        self._view: GroupView | None = None
        self._refused: dict[str, float] = {}

    def invalidate(self) -> None:
        """Forget the description: the next routing decision asks the coordinator again."""
        with self._lock:
            self._view = None

    def view(self) -> GroupView:
        """The group's description, a second old at most (a request to the coordinator otherwise)."""
        with self._lock:
            view = self._view
        if view is not None and time.monotonic() - view.taken < _VIEW_TTL:
            return view
        with self.kafka.errors(f"describing consumer group {self.group!r}"):
            futures = self.kafka.admin.describe_consumer_groups([self.group], request_timeout=self.kafka.timeout)
            description = futures[self.group].result(timeout=self.kafka.timeout)
        members = {
            (m.group_instance_id or m.member_id): sorted(
                tp.partition for tp in (m.assignment.topic_partitions if m.assignment else []) if tp.topic == self.topic
            )
            for m in description.members
        }
        view = GroupView(_STATES.get(description.state, "Unknown"), dict(sorted(members.items())))
        with self._lock:
            if self._view is None or self._view.taken < view.taken:
                self._view = view
        return view

    def owner_url(self, partition: int) -> str:
        """The URL of the live instance that owns ``partition``; :class:`PartitionMovingError` when none does."""
        view = self.view()
        owner = view.owners.get(partition) if view.state == "Stable" else None
        if owner is None:
            raise PartitionMovingError(
                f"Partition {partition} of {self.topic!r} has no owner in group {self.group!r} right now "
                f"(the group is {view.state}): retry in a moment"
            )
        url = self.registry.url(self.group, owner)
        if url is None:
            raise PartitionMovingError(
                f"Partition {partition} is owned by instance {owner!r}, which has published no URL "
                f"in {self.registry.topic!r} (stopped?): retry in a moment"
            )
        if not self.alive(url):
            raise PartitionMovingError(
                f"Partition {partition} is owned by instance {owner!r} at {url}, which does not answer: the group "
                "gives its partitions to another instance once its session times out; retry in a moment"
            )
        return url

    def alive(self, url: str) -> bool:
        """Whether ``url`` accepts a TCP connection: asked every time, but a refusal is remembered for a second."""
        now = time.monotonic()
        with self._lock:
            refused = self._refused.get(url)
        if refused is not None and now - refused < _REFUSED_TTL:
            return False
        parts = urlsplit(url)
        try:
            with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=0.5):
                return True
        except OSError:
            with self._lock:
                self._refused[url] = now
            return False

    def info(self, here: Mapping[str, object]) -> dict[str, object]:
        """``GET /groupinfo``: every partition's owner URL (None while it moves), every instance, this one."""
        view = self.view()
        urls = self.registry.urls(self.group)
        stable = view.state == "Stable"
        return {
            "group": self.group,
            "topic": self.topic,
            "state": view.state,
            "partitions": {
                str(p): (urls.get(view.owners[p]) if stable and p in view.owners else None)
                for p in range(self.kafka.partition_count(self.topic) or 0)
            },
            "instances": {
                member: {"url": urls.get(member), "partitions": owned} for member, owned in view.members.items()
            },
            "here": dict(here),
        }


def fetch_json(url: str, path: str, headers: Mapping[str, str], timeout: float) -> tuple[int, Any, dict[str, str]]:
    """GET ``path`` from another instance: (status, decoded JSON body, headers). Raises OSError when unreachable."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", path, headers=dict(headers))
        answer = conn.getresponse()
        raw = answer.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        return answer.status, body, dict(answer.getheaders())
    finally:
        conn.close()


def wait_settled(instances: Iterable[Any], timeout: float = 60.0) -> None:
    """Wait until the group of these instances (handles or services) has settled: every partition
    assigned to exactly one of them, and every one of them serving."""
    services = [getattr(i, "service", i) for i in instances]
    deadline = time.monotonic() + timeout
    while True:
        owned = sorted(p for s in services for p in s.owned)
        if owned == list(range(services[0].partition_count)) and all(s.ready for s in services):
            return
        if time.monotonic() > deadline:
            raise NotReadyError(f"The group did not settle within {timeout:.0f} s: {services}")
        time.sleep(0.05)


def instance_id(url: str) -> str:
    """A group.instance.id from a URL: ``http://127.0.0.1:8080`` gives ``127.0.0.1-8080``."""
    parts = urlsplit(url)
    host = parts.hostname or socket.gethostname()
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in f"{host}-{parts.port or 80}")
