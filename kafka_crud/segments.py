"""A topic's segment files, read from the broker's log dir: what the log cleaner works on.

Each partition's log is a folder ``<topic>-<partition>`` of **segments**: files named after
their **base offset** (``00000000000000000012.log``), each a run of record batches. The last
segment is the **active** one: appends go there, and the log cleaner never touches it. The
others are either **cleaned** (below the cleaner's checkpoint for the partition, kept in the
log dir's ``cleaner-offset-checkpoint``) or **dirty** (written since the last cleaning).

After cleaning, a segment keeps its base offset while its first record may be later: the
records before it were removed, the offsets were not reused. A batch that holds tombstones
gets a **delete horizon** the first time the cleaner keeps it: a later cleaner pass after that
time removes the tombstones (``delete.retention.ms`` after the first pass).

The files are read directly (Kafka's record batch format v2), which needs the log dir on this
machine: the embedded broker's (:attr:`kafka_crud.LocalKafka.log_dir`), found from the
broker's own ``log.dirs`` setting when it is local. On a local cluster every node has a log
dir of its own, each with a copy of the partitions it holds: a partition's segments are read
from its leader's (the copy consumers read), and a cleaning is complete once every local
copy has been cleaned (:class:`LogDirs`).
"""

from __future__ import annotations

import gzip
import logging
import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .connection import DEFAULT_TOPIC, Kafka, KafkaLike
from .errors import ConfigError

__all__ = [
    "LogDirOption",
    "LogDirs",
    "Segment",
    "cleaner_checkpoints",
    "list_segments",
    "local_log_dir",
    "local_log_dirs",
    "resolve_log_dir",
    "resolve_log_dirs",
]

log = logging.getLogger(__name__)


_CHECKPOINT_FILE = "cleaner-offset-checkpoint"

# Record batch v2 header, big-endian: baseOffset, batchLength, partitionLeaderEpoch, magic, crc,
# attributes, lastOffsetDelta, baseTimestamp, maxTimestamp, producerId, producerEpoch,
# baseSequence, recordsCount.
_HEADER = struct.Struct(">qiibIhiqqqhii")
_LOG_OVERHEAD = 12  # baseOffset + batchLength: batchLength counts the bytes after them
_COMPRESSION_MASK = 0x07
_CONTROL_FLAG = 0x20
_DELETE_HORIZON_FLAG = 0x40  # KIP-534: baseTimestamp then holds the delete horizon
_GZIP = 1


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment file of a partition, as it is on disk now."""

    topic: str
    """The topic."""
    partition: int
    """The partition the segment belongs to."""
    base_offset: int
    """The offset in the file name: the lowest offset the segment may hold."""
    first_offset: int | None
    """Offset of its first record; later than ``base_offset`` once compaction removed records. None if empty."""
    last_offset: int | None
    """Offset of its last record; None if empty."""
    records: int
    """Records in it now (removed records are gone; offsets are not renumbered)."""
    tombstones: int | None
    """Records with a null value; None when a batch's compression cannot be read here."""
    batches: int
    """Record batches in it (the cleaner may keep an empty batch for producer state)."""
    size_bytes: int
    """File size."""
    active: bool
    """The partition's last segment: appends go there; the cleaner never touches it."""
    cleaned: bool
    """Entirely below the cleaner's checkpoint: the cleaner has already processed it."""
    delete_horizon_ms: int | None
    """Latest delete horizon stamped on its batches (ms since the epoch): after it, a cleaner
    pass removes their tombstones. None if no batch was stamped."""
    path: Path
    """The ``.log`` file."""


@dataclass(frozen=True, slots=True)
class _Batch:
    base_offset: int
    records: int
    tombstones: int | None
    first_offset: int | None
    last_offset: int | None
    delete_horizon_ms: int | None


def _varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """A zig-zag varint (Kafka's record fields) at ``pos``: (value, next position)."""
    shift = result = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7


def _record_offsets(payload: bytes | memoryview, base_offset: int) -> Iterator[tuple[int, bool]]:
    """(offset, is tombstone) for each record of an uncompressed batch payload."""
    pos = 0
    end = len(payload)
    while pos < end:
        length, pos = _varint(payload, pos)
        body_end = pos + length
        pos += 1  # attributes (unused)
        _, pos = _varint(payload, pos)  # timestamp delta
        offset_delta, pos = _varint(payload, pos)
        key_length, pos = _varint(payload, pos)
        pos += max(key_length, 0)
        value_length, _ = _varint(payload, pos)
        yield base_offset + offset_delta, value_length < 0
        pos = body_end


def _read_batches(path: Path) -> Iterator[_Batch]:
    """The batches of a segment file; stops at a batch still being written."""
    data = path.read_bytes()
    view = memoryview(data)
    pos = 0
    while pos + _HEADER.size <= len(data):
        (base_offset, batch_length, _epoch, magic, _crc, attributes, last_delta, base_timestamp,
         _max_ts, _pid, _pepoch, _seq, count) = _HEADER.unpack_from(data, pos)
        end = pos + _LOG_OVERHEAD + batch_length
        if batch_length <= 0 or end > len(data):
            break
        if magic != 2:
            raise ConfigError(
                f"{path} holds a record batch of format v{magic}: only v2 (Kafka 0.11+) can be read here"
            )
        horizon = base_timestamp if attributes & _DELETE_HORIZON_FLAG else None
        payload: bytes | memoryview | None = view[pos + _HEADER.size:end]
        compression = attributes & _COMPRESSION_MASK
        if compression == _GZIP:
            payload = gzip.decompress(bytes(payload))  # type: ignore[arg-type]
        elif compression:
            payload = None  # snappy, lz4, zstd: counted from the header, not decoded
        if payload is None or attributes & _CONTROL_FLAG:
            tombstones = None if payload is None else 0
            first = base_offset if count else None
            last = base_offset + last_delta if count else None
        else:
            offsets = list(_record_offsets(payload, base_offset))
            tombstones = sum(1 for _, dead in offsets if dead)
            first = offsets[0][0] if offsets else None
            last = offsets[-1][0] if offsets else None
        yield _Batch(base_offset, count, tombstones, first, last, horizon)
        pos = end


def cleaner_checkpoints(log_dir: str | os.PathLike[str]) -> dict[tuple[str, int], int]:
    """The log cleaner's progress: per (topic, partition), the offset it has cleaned up to.

    Everything below that offset has been through a cleaner pass; a pass that cleaned up to a
    partition's active segment leaves its base offset here. Empty before the first cleaning.
    """
    path = Path(log_dir) / _CHECKPOINT_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return {}
    result: dict[tuple[str, int], int] = {}
    for line in lines[2:]:  # a version line, a count line, then "topic partition offset"
        parts = line.rsplit(" ", 2)
        if len(parts) == 3:
            result[(parts[0], int(parts[1]))] = int(parts[2])
    return result


def _meta(log_dir: Path) -> dict[str, str]:
    """The log dir's ``meta.properties`` (cluster.id, node.id, ...); empty when there is none."""
    try:
        text = (log_dir / "meta.properties").read_text(encoding="utf-8")
    except OSError:
        return {}
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def _broker_log_dirs(kafka: Kafka) -> tuple[str, list[str]]:
    """The cluster id and every log dir the brokers report in their ``log.dirs`` setting."""
    cluster_id, brokers = kafka.broker_configs()
    dirs: list[str] = []
    for _, configs in sorted(brokers.items()):
        value = configs.get("log.dirs") or configs.get("log.dir") or ""
        dirs.extend(d.strip() for d in value.split(",") if d.strip())
    return cluster_id, dirs


def local_log_dirs(kafka: KafkaLike = None) -> dict[int, Path]:
    """Every broker's log dir that is on this machine, by node id (all of a local cluster's).

    Asks the brokers for their ``log.dirs`` and accepts a folder only if it exists here and its
    ``meta.properties`` names the same cluster: a path that merely exists is not proof. The
    node id is the one ``meta.properties`` names.
    """
    cluster_id, dirs = _broker_log_dirs(Kafka.of(kafka))
    found: dict[int, Path] = {}
    for raw in dirs:
        meta = _meta(Path(raw))
        if meta.get("cluster.id", "").strip() == cluster_id:
            found.setdefault(int(meta.get("node.id", "-1").strip() or -1), Path(raw))
    if not found:
        log.info("The brokers' log dirs %s are not on this machine", dirs)
    return dict(sorted(found.items()))


def local_log_dir(kafka: KafkaLike = None) -> Path | None:
    """The broker's log dir when it is on this machine (the embedded broker), else None.

    On a local cluster: the lowest node id's (:func:`local_log_dirs` has every node's).
    """
    dirs = local_log_dirs(kafka)
    return next(iter(dirs.values()), None)


@dataclass(frozen=True)
class LogDirs:
    """The log dirs on this machine of one cluster: one (the embedded broker's) or one per node."""

    dirs: Mapping[int, Path]
    """By node id; a path given by hand has node id -1."""
    kafka: Kafka | None = field(default=None, compare=False)
    """The connection that tells partitions' leaders (None: use the first dir)."""

    @property
    def first(self) -> Path:
        return next(iter(self.dirs.values()))

    def replicas(self, topic: str, partition: int) -> list[Path]:
        """Every local copy of the partition: its folder in each log dir that holds one."""
        return [d / f"{topic}-{partition}" for d in self.dirs.values() if (d / f"{topic}-{partition}").is_dir()]

    def leader_dir(self, topic: str, partition: int) -> Path:
        """The log dir of the partition's leader when it is local, else the first that holds it."""
        if len(self.dirs) > 1 and self.kafka is not None:
            with self.kafka.errors(f"reading the metadata of {topic!r}"):
                info = self.kafka.admin.list_topics(topic=topic, timeout=self.kafka.timeout).topics.get(topic)
            leader = info.partitions[partition].leader if info and partition in info.partitions else -1
            if leader in self.dirs and (self.dirs[leader] / f"{topic}-{partition}").is_dir():
                return self.dirs[leader]
        holding = [d for d in self.dirs.values() if (d / f"{topic}-{partition}").is_dir()]
        return holding[0] if holding else self.first

    def cleaned_to(self, topic: str, partition: int) -> int:
        """How far every local copy has been cleaned (-1 before the first pass on one of them)."""
        copies = [cleaner_checkpoints(folder.parent).get((topic, partition), -1)
                  for folder in self.replicas(topic, partition)]
        return min(copies, default=-1)

    def has_segment(self, topic: str, partition: int, base_offset: int) -> bool:
        """Whether every local copy has a segment starting at ``base_offset`` (it rolled there)."""
        copies = self.replicas(topic, partition)
        return bool(copies) and all((c / f"{base_offset:020d}.log").exists() for c in copies)


#: Where a log dir comes from: a path, ``"auto"`` (the broker's own, when it is on this
#: machine; every node's on a local cluster), :class:`LogDirs`, or ``None`` (do not read files:
#: behave as with a remote broker).
LogDirOption = str | os.PathLike[str] | Literal["auto"] | LogDirs | None


def resolve_log_dirs(log_dir: LogDirOption, kafka: KafkaLike = None) -> LogDirs | None:
    """:class:`LogDirs` for ``log_dir``: a path, every local broker's for ``"auto"`` (None if remote), or None."""
    if log_dir is None or isinstance(log_dir, LogDirs):
        return log_dir
    if isinstance(log_dir, str) and log_dir == "auto":
        connection = Kafka.of(kafka)
        dirs = local_log_dirs(connection)
        return LogDirs(dirs, connection) if dirs else None
    return LogDirs({-1: Path(log_dir)})


def resolve_log_dir(log_dir: LogDirOption, kafka: KafkaLike = None) -> Path | None:
    """A path for ``log_dir``: itself, the local broker's for ``"auto"`` (None if remote), or None."""
    dirs = resolve_log_dirs(log_dir, kafka)
    return None if dirs is None else dirs.first


def _require_log_dirs(log_dir: LogDirOption, kafka: KafkaLike) -> LogDirs:
    dirs = resolve_log_dirs(log_dir, kafka)
    if dirs is None:
        raise ConfigError(
            "Segments can only be listed for the embedded broker: its log dir is on this machine. "
            "This broker keeps its log on its own host (or in a container). Start one with "
            "`kafka-crud broker` or LocalKafka() and point KAFKA_BOOTSTRAP_SERVERS at it, "
            "or pass log_dir= if you can see the broker's files."
        )
    for path in dirs.dirs.values():
        if not path.is_dir():
            raise ConfigError(f"Log dir {path} does not exist: pass the broker's log.dirs (LocalKafka().log_dir)")
    return dirs


def _partition_dirs(log_dir: Path, topic: str) -> dict[int, Path]:
    found: dict[int, Path] = {}
    for entry in log_dir.iterdir():
        name, _, suffix = entry.name.rpartition("-")
        # A deleted topic's folders are renamed "<topic>-<p>.<id>-delete": the suffix is not a number.
        if name == topic and suffix.isdigit() and entry.is_dir():
            found[int(suffix)] = entry
    return dict(sorted(found.items()))


def _segment(topic: str, partition: int, path: Path, *, active: bool, cleaned_to: int | None) -> Segment:
    size = path.stat().st_size
    batches = list(_read_batches(path))
    firsts = [b.first_offset for b in batches if b.first_offset is not None]
    lasts = [b.last_offset for b in batches if b.last_offset is not None]
    horizons = [b.delete_horizon_ms for b in batches if b.delete_horizon_ms is not None]
    tombstone_counts = [b.tombstones for b in batches]
    base_offset = int(path.stem)
    last = max(lasts) if lasts else None
    end = (last + 1) if last is not None else base_offset
    return Segment(
        topic=topic,
        partition=partition,
        base_offset=base_offset,
        first_offset=min(firsts) if firsts else None,
        last_offset=last,
        records=sum(b.records for b in batches),
        tombstones=None if any(t is None for t in tombstone_counts) else sum(t or 0 for t in tombstone_counts),
        batches=len(batches),
        size_bytes=size,
        active=active,
        cleaned=not active and cleaned_to is not None and end <= cleaned_to,
        delete_horizon_ms=max(horizons) if horizons else None,
        path=path,
    )


def list_segments(
    kafka: KafkaLike = None,
    topic: str = DEFAULT_TOPIC,
    *,
    log_dir: LogDirOption = "auto",
) -> list[Segment]:
    """Every segment of ``topic`` on disk now, by partition and base offset.

    ``log_dir="auto"`` asks the broker where its log is; a broker whose log is not on this
    machine raises :class:`~kafka_crud.ConfigError`.
    """
    dirs = _require_log_dirs(log_dir, kafka)
    partitions: dict[int, Path] = {}
    for root in dirs.dirs.values():
        for partition in _partition_dirs(root, topic):
            partitions.setdefault(partition, dirs.leader_dir(topic, partition) / f"{topic}-{partition}")
    partitions = dict(sorted(partitions.items()))
    if not partitions:
        raise ConfigError(
            f"No partition folders for topic {topic!r} in {', '.join(map(str, dirs.dirs.values()))}: create the "
            "topic first, or check that this is the log dir of the broker you write to"
        )
    result: list[Segment] = []
    for partition, folder in partitions.items():
        # The cleaner swaps files while we list: retry a partition whose file vanished meanwhile.
        for attempt in range(5):
            try:
                files = sorted(p for p in folder.glob("*.log") if p.stem.isdigit())
                segments = [
                    _segment(topic, partition, path, active=i == len(files) - 1,
                             cleaned_to=cleaner_checkpoints(folder.parent).get((topic, partition)))
                    for i, path in enumerate(files)
                ]
                break
            except FileNotFoundError:
                if attempt == 4:
                    raise
        result.extend(segments)
    return result
