"""A service's state directory: restart from a snapshot, replaying only what changed since.

    kafka-crud serve --state-dir DIR
    serve_in_thread(kafka, state_dir="DIR")          # or UserService(..., state_dir="DIR")

While it runs, the service writes a snapshot of its store (:mod:`kafka_crud.snapshot`) in the
background, every ``interval`` seconds and once more on a clean stop. On start it loads the
snapshot and assigns each partition from the snapshot's offsets: it reads only the tail, and is
ready, as always, once caught up with the end offsets it read at start.

A snapshot is used only when it is certainly the state of a prefix of *this* log; else it is
discarded, one log line says why, and the store is rebuilt from the beginning:

- it is torn, truncated or corrupt, or of a format or Python marshal version this code cannot read;
- it is of another topic, another cluster (cluster id), an earlier topic of the same name (topic
  id), or a different partition count;
- a partition's log start offset is past the snapshot's offset (records it never saw were
  deleted), or its end offset is before it (the log was truncated);
- it is older than the topic's ``delete.retention.ms`` (less a margin). Kafka keeps a tombstone
  at least that long after the cleaner first sees it, and the cleaner sees it only after it is
  written; past that, a tombstone written after the snapshot may be gone, together with the
  records it deleted, and the deleted user would come back from the snapshot. (Kafka's own doc
  of the setting gives the same bound to a consumer that reads from offset 0.)

The age counts from ``caught_up_at``: before a snapshot is taken, the service reads the end
offsets and waits until its store has applied them, so every record written before that moment
is in it. One directory serves one instance: a lock file keeps a second one out.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import TopicCollection

from .connection import Kafka, Watermarks
from .consumer import Progress, StoreConsumer
from .errors import ConfigError
from .snapshot import Snapshot, SnapshotHeader, UnusableSnapshotError, read_snapshot, snapshot_path, write_snapshot
from .store import UserStore

__all__ = ["Restored", "StateDir", "StatePath", "start_consumer"]

log = logging.getLogger(__name__)

#: Kafka's default ``delete.retention.ms`` (1 day), when a topic does not say.
DEFAULT_DELETE_RETENTION_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Restored:
    """What a start made of the snapshot."""

    loaded: bool
    """Whether the store was loaded from it."""
    reason: str
    """Why not, or what was loaded."""
    offsets: dict[int, int] = field(default_factory=dict)
    """The offsets the consumer starts from (empty: the beginning)."""
    users: int = 0
    """Users loaded."""
    seconds: float = 0.0
    """Time spent reading, checking and loading it."""


class StateDir:
    """The local state of one service: the snapshot of its topic's store, kept up to date in the background.

    Args:
        path: the directory (created if missing); one per instance.
        interval: seconds between snapshots; at most half the topic's ``delete.retention.ms``.
        margin: the fraction of ``delete.retention.ms`` a snapshot must be younger than, beyond
            its age, for the replay to finish before a tombstone it needs can be removed.
    """

    def __init__(self, path: str | os.PathLike[str], *, interval: float = 60.0, margin: float = 0.1) -> None:
        self.path = Path(path)
        self.interval = interval
        self.margin = margin
        self.restored: Restored | None = None
        """What the last start made of the snapshot."""
        self.written: tuple[float, int, int] | None = None
        """(seconds, users, bytes) of the last snapshot this instance wrote."""
        self._kafka: Kafka | None = None
        self._topic = ""
        self._identity: tuple[str, str, int] | None = None
        self._lock_fd: int | None = None
        self._consumer: StoreConsumer | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._last: tuple[dict[int, int], float] | None = None

    @classmethod
    def of(cls, state_dir: StatePath) -> StateDir | None:
        """``state_dir`` itself, a state directory at that path, or None."""
        return state_dir if isinstance(state_dir, StateDir) or state_dir is None else cls(state_dir)

    def snapshot_path(self) -> Path:
        return snapshot_path(self.path, self._topic)

    # -- start ---------------------------------------------------------------------------------
    def restore(self, kafka: Kafka, store: UserStore) -> dict[int, int] | None:
        """Load the snapshot into the empty ``store`` if it may be used; the offsets to start from, or None."""
        self._open(kafka, store.topic)
        started = time.monotonic()
        path = self.snapshot_path()
        read: list[Snapshot | BaseException] = []

        def load() -> None:
            try:
                read.append(read_snapshot(path))
            except BaseException as exc:  # noqa: BLE001 - handed to the thread that waits for it
                read.append(exc)

        # The file is checked (its CRC-32) while the topic's facts come from Kafka: round trips overlap it.
        reader = threading.Thread(target=load, name="kafka-crud-snapshot-load", daemon=True)
        reader.start()
        try:
            facts = self._facts()
        finally:
            reader.join()
        snapshot = read[0]
        if isinstance(snapshot, FileNotFoundError):
            self.restored = Restored(False, f"no snapshot in {self.path}")
            log.info("No snapshot of %r in %s: rebuilding from the beginning", self._topic, self.path)
            return None
        if isinstance(snapshot, UnusableSnapshotError):
            reason: str | None = str(snapshot)
        elif isinstance(snapshot, BaseException):
            raise snapshot
        else:
            reason = self._unusable(snapshot, *facts)
        if reason is not None or not isinstance(snapshot, Snapshot):
            self.restored = Restored(False, f"discarded: {reason}", seconds=time.monotonic() - started)
            log.warning("Discarding the snapshot %s: %s; rebuilding %r from the beginning", path, reason, self._topic)
            return None
        store.load_state(snapshot.state)
        offsets = snapshot.header.offsets
        self.restored = Restored(True, f"loaded {snapshot.header.users} users at offsets {offsets}", dict(offsets),
                                 snapshot.header.users, time.monotonic() - started)
        log.info("Loaded %d users of %r from %s (%.1f MB) in %.2f s; replaying from offsets %s",
                 snapshot.header.users, self._topic, path, snapshot.size / 1e6, self.restored.seconds, offsets)
        return dict(offsets)

    def _facts(self) -> tuple[float, dict[int, Watermarks]]:
        """The topic's identity (kept for the snapshots to come), ``delete.retention.ms`` in seconds, watermarks."""
        assert self._kafka is not None
        self._identity = self._read_identity()
        return self._retention_s(), self._kafka.watermarks(self._topic)

    def _open(self, kafka: Kafka, topic: str) -> None:
        if self._lock_fd is not None:
            return
        self._kafka, self._topic = kafka, topic
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / f"{topic}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"The state directory {self.path} is in use by another instance serving {topic!r}: "
                              "give each instance its own --state-dir") from None
        self._lock_fd = fd
        for stale in self.path.glob(f"{topic}.snapshot.tmp-*"):  # a write a crash cut short
            stale.unlink(missing_ok=True)

    def _read_identity(self) -> tuple[str, str, int]:
        kafka = self._kafka
        assert kafka is not None
        with kafka.errors(f"describing {self._topic!r}"):
            cluster = kafka.admin.list_topics(topic=self._topic, timeout=kafka.timeout).cluster_id
            futures = kafka.admin.describe_topics(TopicCollection([self._topic]), request_timeout=kafka.timeout)
            described = futures[self._topic].result(timeout=kafka.timeout)
        return str(cluster), str(described.topic_id), len(described.partitions)

    def _retention_s(self) -> float:
        assert self._kafka is not None
        config = self._kafka.topic_config(self._topic)
        return int(config.get("delete.retention.ms") or DEFAULT_DELETE_RETENTION_MS) / 1000

    def _unusable(self, snapshot: Snapshot, retention: float, watermarks: dict[int, Watermarks]) -> str | None:
        """Why ``snapshot`` must not be loaded, or None."""
        assert self._identity is not None
        h = snapshot.header
        cluster, topic_id, partitions = self._identity
        if h.topic != self._topic:
            return f"it is of topic {h.topic!r}, not {self._topic!r}"
        if h.cluster_id != cluster:
            return f"it is of another cluster (id {h.cluster_id}, this one's is {cluster})"
        if h.topic_id != topic_id:
            return (f"it is of an earlier topic {h.topic!r} (id {h.topic_id}): the topic was deleted and "
                    f"re-created since (id {topic_id})")
        if h.partitions != partitions:
            return f"it is of {h.partitions} partitions, the topic has {partitions} now"
        age = time.time() - h.caught_up_at
        if age < -60:
            return f"it is from {-age:.0f} s in the future: this machine's clock was changed"
        if age > retention * (1 - self.margin):
            return (f"it is {age:.1f} s old, older than the topic's delete.retention.ms ({retention * 1000:.0f} ms) "
                    f"less a {self.margin:.0%} margin: a tombstone written since may have been removed by "
                    "compaction, and the user it deleted would come back")
        for partition, (low, high) in watermarks.items():
            offset = h.offsets.get(partition, 0)
            if low > offset:
                return (f"partition {partition} starts at offset {low} now, past the snapshot's {offset}: "
                        "records it has not seen were deleted")
            if high < offset:
                return (f"partition {partition} ends at offset {high}, before the snapshot's {offset}: "
                        "the log was truncated")
        return None

    # -- while running ---------------------------------------------------------------------------
    def keep(self, consumer: StoreConsumer) -> None:
        """Write a snapshot of ``consumer``'s store in the background, every interval and on :meth:`stop`."""
        self._open(consumer.kafka, consumer.topic)
        self._identity = self._identity or self._read_identity()
        self._consumer = consumer
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="kafka-crud-snapshots", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval()):
            try:
                self.write()
            except Exception:  # a failed snapshot is logged; the service goes on, the old one stays
                log.exception("Writing the snapshot of %r failed", self._topic)

    def _interval(self) -> float:
        try:
            return min(self.interval, self._retention_s() / 2)
        except Exception:  # noqa: BLE001 - Kafka unreachable for a moment: try again after the interval
            return self.interval

    def write(self, timeout: float = 10.0) -> Path | None:
        """Take a snapshot now, once the store has caught up with the end offsets; its path, or None if skipped."""
        consumer, kafka = self._consumer, self._kafka
        if consumer is None or kafka is None or self._identity is None:
            raise RuntimeError("StateDir.write() needs keep(consumer) first")
        if not consumer.ready or consumer.paused or consumer.error is not None:
            log.info("No snapshot of %r now: its store is not caught up or not consuming", self._topic)
            return None
        caught_up_at = time.time()
        ends = kafka.end_offsets(self._topic, range(self._identity[2]))
        if not consumer.store.reached({p: end - 1 for p, end in ends.items() if end > 0}, timeout):
            log.info("No snapshot of %r now: its store did not catch up within %.0f s", self._topic, timeout)
            return None
        started = time.monotonic()
        state = consumer.store.export_state()
        if self._last is not None and self._last[0] == state.applied and \
                caught_up_at - self._last[1] < self._retention_s() / 4:
            return None  # nothing changed, and the last one is young
        cluster, topic_id, partitions = self._identity
        header = SnapshotHeader(self._topic, topic_id, cluster, partitions, state.applied, caught_up_at,
                                len(state.values))
        path = self.snapshot_path()
        size = write_snapshot(path, header, state)
        self._last = (state.applied, caught_up_at)
        self.written = (time.monotonic() - started, len(state.values), size)
        log.info("Snapshot of %r: %d users at offsets %s, %.1f MB in %.2f s", self._topic, len(state.values),
                 state.applied, size / 1e6, self.written[0])
        return path

    def stop(self, *, final: bool = True) -> None:
        """Stop writing; with ``final``, write a last snapshot first (call it before the consumer stops)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            if final and self._consumer is not None:
                self.write(timeout=5.0)
        except Exception:  # stopping goes on; the previous snapshot stays
            log.exception("Writing the last snapshot of %r failed", self._topic)
        finally:
            self._consumer = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None


#: What ``state_dir=`` accepts: a :class:`StateDir`, a path, or None (no snapshots).
StatePath = StateDir | str | os.PathLike[str] | None


def start_consumer(
    store: UserStore, kafka: Kafka, state_dir: StateDir | None, *,
    on_progress: Callable[[Progress], None] | None = None, paused: bool = False,
) -> StoreConsumer:
    """Start a :class:`StoreConsumer` for ``store``; with ``state_dir``, from its snapshot, keeping it up to date."""
    offsets = state_dir.restore(kafka, store) if state_dir is not None else None
    consumer = StoreConsumer(store, kafka, on_progress=on_progress, paused=paused, start_offsets=offsets).start()
    if state_dir is not None:
        state_dir.keep(consumer)
    return consumer
