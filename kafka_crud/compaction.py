"""Compaction, step by step, on a real broker: roll the active segment, wait for the cleaner, compare.

The log cleaner of a compacted topic keeps, per partition, the latest record of every key and
removes the records it supersedes, but only where both lie in the *cleanable* part of the log:
the segments before the active one (the cleaner's offset map covers the dirty section below
the active segment; the active segment is never cleaned). So "compact now" takes three steps:

1. roll (:func:`kafka_crud.rolling.roll_segments`): the next append, a real write of the
   lesson where there is one, a roll marker otherwise, starts a new active segment;
2. :func:`wait_for_cleaner`: wait until the cleaner has cleaned up to it;
3. compare the log before and after: superseded records are gone, survivors keep their offsets
   (the gaps), the live set is unchanged (:class:`CompactionResult`).

:func:`compact` does the three; :func:`remove_tombstones` shows the second half of a
tombstone's life: the first pass keeps it and stamps a *delete horizon* (the pass's time +
``delete.retention.ms``) on its batch, and only a later pass after that horizon removes it. A
later pass needs new dirty data, so that step rolls again.

On a cluster you did not tune, none of this happens "within seconds": nothing is cleaned until
a segment rolls (``segment.ms``, 7 days by default, or ``max.compaction.lag.ms``), and the
cleaner picks a partition only once its dirty ratio reaches ``min.cleanable.dirty.ratio``
(0.5 by default). Run one step at a time per topic: each changes topic settings for its
duration and restores them when done.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from .connection import DEFAULT_TOPIC, Kafka, KafkaLike
from .errors import CleanerTimeoutError
from .records import LogRecord, classify
from .rolling import needs_roll, roll_segments, topic_overrides
from .segments import LogDirOption, LogDirs, list_segments, resolve_log_dirs

__all__ = ["CompactionResult", "TombstoneRemoval", "compact", "remove_tombstones", "wait_for_cleaner"]

log = logging.getLogger(__name__)

_POLL = 0.05
_REMOTE_POLL = 0.5


@dataclass(frozen=True)
class CompactionResult:
    """The log before and after one cleaner pass, and what it took."""

    topic: str
    """The topic."""
    before: list[LogRecord]
    """Every record before the roll."""
    after: list[LogRecord]
    """Every record once the cleaner had cleaned up to ``rolled``."""
    rolled: dict[int, int]
    """Per partition rolled, the offset of the record that rolled it: the new active segment's base offset."""
    seconds: float
    """From the roll to the cleaner having cleaned up to it."""

    @property
    def removed(self) -> list[LogRecord]:
        """Records of ``before`` that the cleaner removed."""
        kept = {(r.partition, r.offset) for r in self.after}
        return [r for r in self.before if (r.partition, r.offset) not in kept]

    @property
    def kept(self) -> list[LogRecord]:
        """Records of ``before`` still in the log, at the same offsets."""
        present = {(r.partition, r.offset) for r in self.after}
        return [r for r in self.before if (r.partition, r.offset) in present]

    @property
    def gaps(self) -> list[tuple[int, int, int]]:
        """(partition, first, last) offset ranges with no record left in ``after``."""
        result: list[tuple[int, int, int]] = []
        expected: dict[int, int] = {}
        for record in sorted(self.after, key=lambda r: (r.partition, r.offset)):
            start = expected.get(record.partition, 0)
            if record.offset > start:
                result.append((record.partition, start, record.offset - 1))
            expected[record.partition] = record.offset + 1
        return result



@dataclass(frozen=True)
class TombstoneRemoval:
    """A tombstone's second half of life: kept and stamped by one pass, removed by a later one."""

    topic: str
    """The topic."""
    tombstones: list[LogRecord]
    """The tombstones in the log when the step began, and those the first pass kept."""
    delete_retention_ms: int
    """The topic's ``delete.retention.ms``: how long after its first cleaning a tombstone stays."""
    delete_horizon_ms: int | None
    """Latest delete horizon stamped on a batch holding them (ms since the epoch), when known."""
    seconds: float
    """From the end of the first pass to the tombstones being gone."""
    passes: list[CompactionResult] = field(default_factory=list)
    """Each cleaner pass of the step, in order; the first stamped the horizon."""

    @property
    def before(self) -> list[LogRecord]:
        """The log before the first pass."""
        return self.passes[0].before

    @property
    def stamped(self) -> list[LogRecord]:
        """The log after the first pass: superseded records gone, tombstones still there."""
        return self.passes[0].after

    @property
    def after(self) -> list[LogRecord]:
        """The log after the last pass: the tombstones gone too."""
        return self.passes[-1].after

    @property
    def removed(self) -> list[LogRecord]:
        """The tombstones of :attr:`tombstones` no longer in the log."""
        present = {(r.partition, r.offset) for r in self.after}
        return [r for r in self.tombstones if (r.partition, r.offset) not in present]



def _superseded_below(records: list[LogRecord], rolled: Mapping[int, int]) -> list[LogRecord]:
    """Records superseded by a record that is also below the partition's roll (in cleanable segments)."""
    return [
        r for r, (status, newer) in zip(records, classify(records), strict=True)
        if r.partition in rolled and status == "superseded" and newer is not None and newer < rolled[r.partition]
    ]


def wait_for_cleaner(
    kafka: KafkaLike = None,
    topic: str = DEFAULT_TOPIC,
    rolled: Mapping[int, int] | None = None,
    *,
    timeout: float = 60.0,
    log_dir: LogDirOption = "auto",
) -> float:
    """Wait until the cleaner has cleaned each partition up to ``rolled`` (from :func:`roll_segments`).

    With the broker's log dir (the embedded broker), waits for its ``cleaner-offset-checkpoint``
    to reach those offsets: proof that a pass ran. A remote broker's files are out of sight, so
    this re-reads the log until no record below a roll is superseded by another below it;
    when nothing was to be removed, that is true at once (nothing to see, nothing to wait for).

    Returns the seconds waited; raises :class:`CleanerTimeoutError` after ``timeout`` seconds.
    """
    kafka = Kafka.of(kafka)
    rolled = dict(rolled or {})
    root = resolve_log_dirs(log_dir, kafka)
    started = time.monotonic()
    deadline = started + timeout
    check: Callable[[], bool]
    if root is not None:
        def check() -> bool:  # every local copy cleaned (each node's cleaner works on its own)
            return all(root.cleaned_to(topic, p) >= offset for p, offset in rolled.items())
        poll = _POLL
    else:
        def check() -> bool:
            return not _superseded_below(kafka.read_log(topic), rolled)
        poll = _REMOTE_POLL
    while not check():
        if time.monotonic() > deadline:
            raise CleanerTimeoutError(
                f"The log cleaner did not clean {topic!r} up to {rolled} within {timeout:.0f} s. "
                "Is the topic compacted (cleanup.policy=compact)? Is min.compaction.lag.ms small? "
                "A remote broker may check for work only every log.cleaner.backoff.ms (15 s by default): "
                "give a longer timeout."
            )
        time.sleep(poll)
    return time.monotonic() - started


def compact(
    kafka: KafkaLike = None,
    topic: str = DEFAULT_TOPIC,
    *,
    write: Callable[[], object] | None = None,
    partitions: Iterable[int] | None = None,
    timeout: float = 60.0,
    log_dir: LogDirOption = "auto",
    force: bool = False,
) -> CompactionResult:
    """One cleaner pass, now: read the log, roll, wait for the cleaner, read the log again.

    ``write``: the lesson's next real writes, which roll the partitions they land in (as the
    next append after ``segment.ms`` does in production); other partitions that need a roll get
    a roll marker (see :mod:`kafka_crud.rolling`). ``partitions``: which to roll, by default
    those with something appended since their last roll.

    Raises :class:`~kafka_crud.TopicNotCompactedError` for a topic that is not compacted, and
    :class:`~kafka_crud.TopicNotOwnedError` for one the kit did not create (unless ``force``):
    the step appends to it and changes its settings for a moment. During the step
    ``min.cleanable.dirty.ratio`` is 0, so that the cleaner cleans even a dirty section much
    smaller than the clean one (at the teaching 0.01, a topic holding a few hundred users would
    otherwise not be cleaned for the few records of a demo); it is restored after.
    """
    kafka = Kafka.of(kafka)
    kafka.require_compacted(topic)
    kafka.require_owned(topic, "compact", force=force)
    root = resolve_log_dirs(log_dir, kafka)
    where: LogDirOption = root  # resolved once, not per step
    before = kafka.read_log(topic)
    wanted = needs_roll(before) if partitions is None else sorted(set(partitions))
    if not wanted and write is None:
        return CompactionResult(topic, before, before, {}, 0.0)
    with topic_overrides(kafka, topic, {"min.cleanable.dirty.ratio": "0"}, force=True):
        rolled = roll_segments(
            kafka, topic, partitions=wanted, write=write, timeout=timeout, log_dir=where, force=True,
        )
        seconds = wait_for_cleaner(kafka, topic, rolled, timeout=timeout, log_dir=where)
    result = CompactionResult(topic, before, kafka.read_log(topic), rolled, seconds)
    log.info("Compacted %r in %.2f s: %d of %d records removed", topic, seconds, len(result.removed), len(before))
    return result


def _latest_horizon(kafka: Kafka, topic: str, root: LogDirs, partitions: set[int]) -> int | None:
    horizons = [
        s.delete_horizon_ms for s in list_segments(kafka, topic, log_dir=root)
        if s.partition in partitions and s.delete_horizon_ms is not None
    ]
    return max(horizons) if horizons else None


def remove_tombstones(
    kafka: KafkaLike = None,
    topic: str = DEFAULT_TOPIC,
    *,
    timeout: float = 120.0,
    log_dir: LogDirOption = "auto",
    force: bool = False,
) -> TombstoneRemoval:
    """Watch the cleaner remove tombstones: a pass that stamps them, the wait, a pass that removes them.

    1. :func:`compact`: superseded records go; tombstones stay, their batches stamped with a
       delete horizon (the pass's time + ``delete.retention.ms``). Until then, a consumer that
       is reading the topic from the start still sees the delete.
    2. Wait until the horizon has passed: read from the segment files with the embedded broker,
       estimated as now + ``delete.retention.ms`` otherwise.
    3. :func:`compact` again (it rolls the tombstones' partitions, which gives the cleaner new
       dirty data: without it no pass would run), until the tombstones are gone.

    An empty value (``b""``) is not a tombstone: no pass ever removes the latest one of its key.
    Raises :class:`CleanerTimeoutError` when it takes longer than ``timeout`` seconds; create
    the topic with a smaller ``delete.retention.ms`` for a quick demo.
    """
    kafka = Kafka.of(kafka)
    kafka.require_owned(topic, "compact", force=force)
    root = resolve_log_dirs(log_dir, kafka)
    deadline = time.monotonic() + timeout
    first = compact(kafka, topic, timeout=timeout, log_dir=root, force=True)
    passes = [first]
    retention_ms = int(kafka.topic_config(topic)["delete.retention.ms"])
    # What this step waits for: the lesson's tombstones the first pass kept (and stamped), below
    # its roll. The kit's own roll markers are tombstones too, but nobody waits for those.
    waiting = [
        r for r in first.after
        if r.value is None and not r.is_marker and r.offset < first.rolled.get(r.partition, -1)
    ]
    seen = {(r.partition, r.offset) for r in first.before}
    tombstones = [r for r in first.before if r.value is None and not r.is_marker] + [
        r for r in waiting if (r.partition, r.offset) not in seen
    ]
    started = time.monotonic()
    if not waiting:
        return TombstoneRemoval(topic, tombstones, retention_ms, None, 0.0, passes)
    partitions = {r.partition for r in waiting}
    horizon = _latest_horizon(kafka, topic, root, partitions) if root is not None else None
    wait_until = horizon if horizon is not None else int(time.time() * 1000) + retention_ms
    while True:
        wait = (wait_until - time.time() * 1000) / 1000 + 0.05
        if time.monotonic() + max(wait, 0) > deadline:
            raise CleanerTimeoutError(
                f"The tombstones of {topic!r} become removable only in {wait:.1f} s "
                f"(delete.retention.ms={retention_ms}), beyond the {timeout:.0f} s timeout: give a longer "
                "timeout, or create the topic with a smaller delete.retention.ms for a demo"
            )
        if wait > 0:
            log.info("Waiting %.1f s for the delete horizon of %r", wait, topic)
            time.sleep(wait)
        remaining = max(deadline - time.monotonic(), 1.0)
        # Rolled even when nothing was appended since: a pass needs new dirty data to run at all.
        result = compact(kafka, topic, partitions=partitions, timeout=remaining, log_dir=root, force=True)
        passes.append(result)
        present = {(r.partition, r.offset) for r in result.after}
        if not any((t.partition, t.offset) in present for t in waiting):
            break
        if time.monotonic() > deadline:
            raise CleanerTimeoutError(
                f"{len(waiting)} tombstone(s) of {topic!r} were still there after {len(passes)} cleaner passes "
                f"and {timeout:.0f} s: give a longer timeout"
            )
        # The broker's clock, or the estimate, was behind: another pass a little later.
        wait_until = int(time.time() * 1000) + 500
    seconds = time.monotonic() - started
    log.info("Tombstones of %r removed %.2f s after the pass that stamped them", topic, seconds)
    return TombstoneRemoval(topic, tombstones, retention_ms, horizon, seconds, passes)
