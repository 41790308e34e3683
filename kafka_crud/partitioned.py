"""The article's partitioned design, done right: a consumer group splits the users between instances.

    kafka-crud serve --group users --advertise http://10.0.0.5:8080

Each instance joins the consumer group ``users`` and holds only the users of the partitions the
group assigns it, restored from the beginning of each such partition before it serves them. A
request for a user of another partition answers ``307 Temporary Redirect`` to the instance that
owns it (:mod:`kafka_crud.routing` says which, and where); a client that follows redirects gets
its answer from the owner, which is also the only instance that writes that user: ``If-Match``
then holds across instances, which it does not in the replicated design.

The group is Kafka's classic protocol with the range assignor and static membership:

- ``group.instance.id`` is the instance's name, so an instance restarted within
  ``session.timeout.ms`` gets its partitions back without a rebalance; a static member sends no
  LeaveGroup when it stops, so its partitions move only once that timeout has passed (6 s here);
- the group's leader member computes the assignment; range orders the members by their
  ``group.instance.id`` and gives each a run of consecutive partitions;
- the classic protocol is *eager*: at a rebalance every member gives up all its partitions
  (``on_revoke``) before it gets its new ones (``on_assign``). In between, and until a partition
  it was given is restored, the instance answers ``503`` with ``Retry-After`` for it: never a
  stale or missing user. Before it gives its partitions up, it lets the writes it has sent to
  Kafka be acknowledged, and refuses new ones, so the next owner's restore (to the end offsets
  taken once it is assigned the partition) includes every write it acknowledged.

Consumption is at least once, like any consumer's: a record may be applied twice (after a
rebalance, say); applying a record is idempotent (the latest offset per key wins), so that is harmless.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from .connection import DEFAULT_PARTITIONS, DEFAULT_TOPIC, KafkaLike
from .consumer import Progress, apply_messages, gc_paused
from .errors import ConfigError, NotReadyError, PartitionMovingError
from .positions import Positions, format_positions, parse_min_positions
from .records import Position
from .routing import InstanceRegistry, Router, fetch_json, instance_id
from .service import UserService

__all__ = ["PartitionedService", "Rebalance"]

log = logging.getLogger(__name__)

#: The broker's default group.min.session.timeout.ms: the shortest session a group accepts.
SESSION_TIMEOUT_MS = 6000


@dataclass(frozen=True)
class Rebalance:
    """One rebalance as this instance lived it."""

    revoked: float
    """When it gave up its partitions, or started to join (time.monotonic()): the start of the pause."""
    assigned: float
    """When it got its new assignment."""
    serving: float
    """When every partition of the new assignment was restored: the end of the pause."""
    before: tuple[int, ...]
    """Its partitions before."""
    after: tuple[int, ...]
    """Its partitions after."""

    @property
    def pause(self) -> float:
        """Seconds during which this instance answered 503 for its partitions."""
        return self.serving - self.revoked


class PartitionedService(UserService):
    """One instance of the partitioned design: the users of the partitions its group gives it.

    Args:
        kafka: the connection (or an address; None: the environment's).
        group: the consumer group's id: every instance of one service uses the same.
        instance: this instance's ``group.instance.id``, unique in the group and the same after a
            restart (default: from the URL, like ``127.0.0.1-8080``).
        url: where other instances and clients reach this one (``--advertise``); serve_in_thread
            sets it to the server's address when not given.
        session_timeout: seconds after which the group gives a silent instance's partitions away.
        Others as for :class:`~kafka_crud.UserService`.
    """

    def __init__(
        self,
        kafka: KafkaLike = None,
        *,
        group: str,
        instance: str | None = None,
        url: str | None = None,
        topic: str = DEFAULT_TOPIC,
        partitions: int = DEFAULT_PARTITIONS,
        write_timeout: float = 5.0,
        session_timeout: float = SESSION_TIMEOUT_MS / 1000,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        super().__init__(kafka, topic=topic, partitions=partitions, write_timeout=write_timeout,
                         on_progress=on_progress)
        if not group:
            raise ConfigError("A partitioned service needs a consumer group id (--group NAME)")
        self.group = group
        self.instance = instance
        self.url: str | None = url
        self.session_timeout = session_timeout
        self.registry = InstanceRegistry(self.kafka)
        self.router = Router(self.kafka, group, topic, self.registry)
        self.rebalances: list[Rebalance] = []
        """Every rebalance this instance went through, with its pause."""
        # The partition state, guarded by the write condition of UserService (one lock for both).
        self._owned: set[int] = set()
        self._targets: dict[int, int] = {}
        self._restored: set[int] = set()
        self._rebalancing = True  # until the first assignment
        self._joined = threading.Event()
        self._revoked_at: float | None = None
        self._before: tuple[int, ...] = ()
        self._assigned_at = 0.0
        self._started = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    # -- life --------------------------------------------------------------------------------
    def start(self) -> PartitionedService:
        if not self.url:
            raise ConfigError("A partitioned service needs its URL (url=..., --advertise): others redirect to it")
        self.instance = self.instance or instance_id(self.url)
        self.partition_count = self.kafka.ensure_topic(self.topic, partitions=self.partitions)
        from .producer import UserProducer

        self._producer = UserProducer(self.kafka, topic=self.topic, timeout=self.write_timeout)
        self.registry.start()
        self.registry.publish(self.group, self.instance, self.url, topic=self.topic)
        self._started = self._revoked_at = time.monotonic()  # joining counts as the first pause
        consumer = Consumer(self.kafka.client_config(**{
            "group.id": self.group,
            "group.instance.id": self.instance,
            "group.protocol": "classic",
            "partition.assignment.strategy": "range",
            "session.timeout.ms": int(self.session_timeout * 1000),
            "heartbeat.interval.ms": 500,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 100,
        }))
        consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)
        self._thread = threading.Thread(target=self._run, args=(consumer,), name=f"kafka-crud-group-{self.instance}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop consuming (a static member: the group moves its partitions after the session timeout)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.instance:
            self.registry.withdraw(self.group, self.instance)
        self.registry.stop()
        if self._producer is not None:
            self._producer.close()

    @property
    def ready(self) -> bool:
        """True once in the group, not in a rebalance, and every partition it was given is restored."""
        with self._writes_done:
            return self._joined.is_set() and not self._rebalancing and self._restored >= self._owned

    @property
    def consumer(self) -> Any:
        raise NotReadyError("A partitioned service has no StoreConsumer: its consumer is in a group")

    def wait_ready(self, timeout: float | None = None) -> PartitionedService:
        deadline = time.monotonic() + (timeout if timeout is not None else 3600.0)
        while not self.ready:
            if self.error is not None:
                raise NotReadyError(f"The group consumer of {self.instance} failed: {self.error}")
            if time.monotonic() > deadline:
                raise NotReadyError(f"{self.instance} has not joined group {self.group!r} and restored its "
                                    f"partitions within {timeout} s (it has {sorted(self._restored)} of "
                                    f"{sorted(self._owned)})")
            time.sleep(0.02)
        return self

    def progress(self) -> Progress:
        with self._writes_done:
            targets = dict(self._targets)
        applied = self.store.applied()
        done = sum(min(applied.get(p, 0), end) for p, end in targets.items())
        return Progress(done, sum(targets.values()), time.monotonic() - self._started)

    def wait_caught_up(self, timeout: float = 30.0) -> dict[int, int]:
        """Wait until the store has applied every record now in the partitions it holds."""
        owned = self.owned
        ends = self.kafka.end_offsets(self.topic, owned) if owned else {}
        if not self.store.reached({p: e - 1 for p, e in ends.items() if e > 0}, timeout):
            raise NotReadyError(f"{self.instance} did not catch up with {ends} within {timeout:.0f} s")
        return self.store.applied()

    @property
    def owned(self) -> list[int]:
        """The partitions the group gave this instance (restored or not)."""
        with self._writes_done:
            return sorted(self._owned)

    def _in_rebalance(self) -> PartitionMovingError:
        return PartitionMovingError(f"{self.instance} is in a rebalance of group {self.group!r}: retry in a moment")

    def _require_ready(self) -> None:
        if not self.ready:
            raise PartitionMovingError(
                f"{self.instance} is joining group {self.group!r} or restoring its partitions: retry in a moment"
            )

    # -- where a key is served ------------------------------------------------------------------
    def holds(self, partition: int) -> bool:
        with self._writes_done:
            return not self._rebalancing and partition in self._restored

    def route(self, email: str) -> str | None:
        return self.route_partition(self.partition_of(email))

    def route_partition(self, partition: int) -> str | None:
        with self._writes_done:
            if self._rebalancing:
                raise self._in_rebalance()
            if partition in self._owned:
                return None
        url = self.router.owner_url(partition)
        if url.rstrip("/") == (self.url or "").rstrip("/"):
            self.router.invalidate()  # the coordinator's view predates our latest assignment
            raise PartitionMovingError(f"Partition {partition} is moving to or from {self.instance}: retry in a moment")
        return url

    def _require_serving(self, partition: int) -> None:
        with self._writes_done:
            if self._rebalancing:
                raise self._in_rebalance()
            if partition not in self._owned:
                raise PartitionMovingError(f"Partition {partition} is not {self.instance}'s (any more): retry")
            if partition not in self._restored:
                applied = self.store.applied().get(partition, 0)
                raise PartitionMovingError(
                    f"{self.instance} is restoring partition {partition} of {self.topic!r} "
                    f"({applied} of {self._targets.get(partition, 0)} offsets): retry in a moment"
                )

    def _accepting_writes(self, partition: int) -> None:
        if self._rebalancing or partition not in self._owned:  # called with the lock held
            raise PartitionMovingError(f"Partition {partition} is being handed over by {self.instance}: retry")

    def _await_applied(self, position: Position, started: float) -> None:
        # As UserService's, but a partition handed over meanwhile ends the wait: the new owner
        # restores it to end offsets taken after this write was acknowledged.
        left = max(self.write_timeout - (time.monotonic() - started), 0.5)
        p, offset = position.partition, position.offset
        if not self.store.wait_until(lambda applied: applied.get(p, 0) > offset or p not in self._owned, left):
            super()._await_applied(position, started)  # raises its NotReadyError

    def list_users(
        self, *, partition: int | None = None, min_positions: Mapping[int, int] | None = None,
        wait: float | None = None,
    ) -> tuple[list[dict[str, str]], Positions]:
        """``GET /users``: this instance's partitions from its store, the others from their owners.

        A partition whose owner cannot answer now (moving, restoring, unreachable) makes the whole
        answer a 503: a list with some partitions missing would be a list of the wrong users.
        """
        if partition is not None:
            return super().list_users(partition=partition, min_positions=min_positions, wait=wait)
        self._require_ready()
        users: list[dict[str, str]] = []
        applied: Positions = {}
        for p in range(self.partition_count):
            wanted = {p: min_positions[p]} if min_positions and p in min_positions else None
            if self.holds(p):
                part, part_applied = super().list_users(partition=p, min_positions=wanted, wait=wait)
            else:
                part, part_applied = self._remote_users(p, wanted, wait)
            users += part
            applied.update(part_applied)
        users.sort(key=lambda u: u["email"].encode("utf-8", "surrogatepass"))
        return users, applied

    def _remote_users(
        self, partition: int, wanted: Positions | None, wait: float | None
    ) -> tuple[list[dict[str, str]], Positions]:
        url = self.router.owner_url(partition)
        headers = {"Kafka-Min-Position": format_positions(wanted)} if wanted else {}
        if wait is not None:
            headers["Prefer"] = f"wait={wait:.0f}"
        timeout = (self.write_timeout if wait is None else wait) + 5
        try:
            status, body, answer = fetch_json(url, f"/users?partition={partition}", headers, timeout)
        except OSError as exc:
            raise PartitionMovingError(f"The owner of partition {partition} at {url} did not answer ({exc})") from None
        if status != 200 or not isinstance(body, list):
            raise PartitionMovingError(f"The owner of partition {partition} at {url} answered {status}: retry")
        position = answer.get("Kafka-Position")
        theirs = parse_min_positions(position, topic=self.topic, partitions=self.partition_count) if position else {}
        return body, {p: o for p, o in theirs.items() if p == partition}

    def groupinfo(self) -> dict[str, object]:
        with self._writes_done:
            here = {"instance": self.instance, "url": self.url, "partitions": sorted(self._owned),
                    "restored": sorted(self._restored), "rebalancing": self._rebalancing,
                    "rebalances": [{"before": list(r.before), "after": list(r.after),
                                    "pause_ms": round(r.pause * 1000, 1)} for r in self.rebalances[-10:]]}
        return self.router.info(here)

    # -- the group consumer ------------------------------------------------------------------------
    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with self._writes_done:
            self._revoked_at = time.monotonic()
            self._before = tuple(sorted(self._owned))
            self._rebalancing = True
            # Writes already sent are acknowledged before the partitions go; new ones get 503.
            deadline = time.monotonic() + self.write_timeout + 5
            while self._producing and time.monotonic() < deadline:
                self._writes_done.wait(deadline - time.monotonic())
        log.info("%s: partitions %s revoked", self.instance, sorted(tp.partition for tp in partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._on_revoke(consumer, partitions)
        for partition in list(self._owned):  # another member may have written them meanwhile
            self.store.drop_partition(partition)
        with self._writes_done:
            self._owned, self._restored = set(), set()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        new = {tp.partition for tp in partitions}
        # The end offsets to restore to, taken now that every previous owner has stopped writing.
        ends = self.kafka.end_offsets(self.topic, new) if new else {}
        kept = self._owned & new
        for partition in (self._owned - new) | (new - kept):
            self.store.drop_partition(partition)  # moved away, or new here: from the beginning
        applied = self.store.applied()
        with self._writes_done:
            self._owned = new
            self._targets = ends
            self._restored = {p for p in new if applied.get(p, 0) >= ends[p]}
            self._rebalancing = False
            self._assigned_at = time.monotonic()
            self._writes_done.notify_all()
        self._joined.set()
        consumer.assign([TopicPartition(self.topic, p, applied[p] if p in kept and applied.get(p, 0) > 0
                                        else OFFSET_BEGINNING) for p in sorted(new)])
        self.router.invalidate()
        log.info("%s: assigned %s (kept %s), restoring to %s", self.instance, sorted(new), sorted(kept), ends)
        self._check_restored()

    def _check_restored(self) -> None:
        applied = self.store.applied()
        with self._writes_done:
            done = {p for p in self._owned - self._restored if applied.get(p, 0) >= self._targets.get(p, 0)}
            self._restored |= done
            finished = self._restored >= self._owned and self._revoked_at is not None and not self._rebalancing
            if finished and self._revoked_at is not None:
                self.rebalances.append(Rebalance(self._revoked_at, self._assigned_at, time.monotonic(),
                                                 self._before, tuple(sorted(self._owned))))
                self._revoked_at = None
        if done:
            self.store.wake()
        if finished and self._on_progress:
            self._on_progress(self.progress())

    def _run(self, consumer: Consumer) -> None:
        try:
            while not self._stop.is_set():
                first = consumer.poll(0.1)
                if first is None:
                    continue
                messages = [first, *consumer.consume(num_messages=10_000, timeout=0)]
                owned = self._owned  # only this thread changes it
                with gc_paused():
                    apply_messages(self.store, [m for m in messages if m.partition() in owned],
                                   self.kafka.bootstrap_servers)
                if self._restored != self._owned:
                    self._check_restored()
        except BaseException as exc:
            self.error = exc
            log.exception("The group consumer of %s stopped", self.instance)
        finally:
            consumer.close()

    def __repr__(self) -> str:
        return (f"<PartitionedService {self.instance} group={self.group!r} partitions={self.owned} "
                f"users={len(self.store)}>")
