"""A snapshot of a store on local disk: the users, with the position in the log they reflect.

A restart that loads one replays only the records written since (:mod:`kafka_crud.state_dir`
decides when one may be used). The file, ``<topic>.snapshot`` in the state directory::

    8 bytes   b"KCSNAP1\\n"                    what the file is
    4 + 4     header length, its CRC-32        big-endian
    header    JSON: format, topic, topic id, cluster id, partitions, offsets, times, payload size and CRC-32
    payload   4-byte length and a :mod:`marshal` dump of the invalid keys and idempotency keys,
              then the users: a :class:`~kafka_crud.table.SortedTable`, used in place on start

It is written to a temporary file in the same directory, flushed to disk (``fsync``), renamed
over the old one (``os.replace``, atomic on POSIX) and the directory flushed too: a crash in
the middle leaves the old snapshot, or the new one, never a mix. A file that is torn anyway
(a disk that lies about flushes, a copy cut short) fails its length or checksum and is refused:
it is never loaded. :mod:`marshal` is Python's own fast format for plain values; it is not
meant for files from others, so a snapshot is read only after its checksum matches, and only
by a Python whose marshal format is the one that wrote it.
"""

from __future__ import annotations

import json
import marshal
import mmap
import os
import struct
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .idempotency import Outcome
from .records import Position
from .store import StoreState, sorted_users
from .table import SortedTable, pack_table, table_size

__all__ = ["FORMAT", "MAGIC", "Snapshot", "SnapshotHeader", "UnusableSnapshotError", "read_snapshot",
           "snapshot_path", "write_snapshot"]

MAGIC = b"KCSNAP1\n"
#: The snapshot format this code writes and reads (1: the users as marshal frames).
FORMAT = 2
_PREFIX = struct.Struct(">II")
_FRAME = struct.Struct(">I")


class UnusableSnapshotError(Exception):
    """A snapshot that must not be loaded; the message says why, for the log."""


@dataclass(frozen=True, slots=True)
class SnapshotHeader:
    """What a snapshot is of, and what position it reflects."""

    topic: str
    """The topic it was taken from."""
    topic_id: str
    """That topic's id: a topic deleted and re-created under the same name has another."""
    cluster_id: str
    """The cluster's id."""
    partitions: int
    """The topic's partition count when it was taken."""
    offsets: dict[int, int]
    """Per partition, the next offset to apply: the snapshot holds every record before it."""
    caught_up_at: float
    """When (seconds since the epoch) the store had applied every record written until then."""
    users: int
    """How many users it holds."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A snapshot read back: its header and the store's state."""

    header: SnapshotHeader
    state: StoreState
    size: int
    """The file's size in bytes."""


def snapshot_path(state_dir: str | os.PathLike[str], topic: str) -> Path:
    """Where the snapshot of ``topic`` lives in ``state_dir``."""
    return Path(state_dir) / f"{topic}.snapshot"


def _frames(state: StoreState, users: int) -> Iterator[bytes]:
    extra = marshal.dumps({
        "invalid": state.invalid,
        # Plain types only: marshal refuses subclasses (an HTTPStatus is an int subclass).
        "outcomes": [(str(k), str(o.fingerprint), int(o.status), int(o.position.partition),
                      int(o.position.offset), float(o.written)) for k, o in state.outcomes],
    })
    yield _FRAME.pack(len(extra))
    yield extra
    table = pack_table(sorted_users(state.values))
    if table_size(table) != users:
        raise ValueError(f"the store changed while it was copied: {table_size(table)} users, {users} counted")
    yield from table


def write_snapshot(path: Path, header: SnapshotHeader, state: StoreState) -> int:
    """Write ``state`` to ``path`` atomically and durably; return the file's size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with tmp.open("wb") as out:
            # The header goes first, so its size must be known: reserve room, write the payload
            # after it, then come back and fill the header in.
            payload_crc, payload_size = 0, 0
            fields = {"format": FORMAT, "marshal": marshal.version, "topic": header.topic,
                      "topic_id": header.topic_id, "cluster_id": header.cluster_id,
                      "partitions": header.partitions, "offsets": {str(p): o for p, o in header.offsets.items()},
                      "caught_up_at": header.caught_up_at, "written_at": time.time(), "users": header.users}
            reserved = len(_header_bytes({**fields, "payload_bytes": 2**63, "payload_crc32": 2**32}))
            out.seek(len(MAGIC) + _PREFIX.size + reserved)
            for part in _frames(state, header.users):
                out.write(part)
                payload_crc = zlib.crc32(part, payload_crc)
                payload_size += len(part)
            encoded = _header_bytes({**fields, "payload_bytes": payload_size, "payload_crc32": payload_crc})
            encoded = encoded.ljust(reserved)  # JSON allows trailing spaces
            out.seek(0)
            out.write(MAGIC + _PREFIX.pack(len(encoded), zlib.crc32(encoded)) + encoded)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path.stat().st_size


def _header_bytes(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode()


def _fsync_dir(directory: Path) -> None:
    """Flush the directory entry: without it the rename itself may be lost in a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_snapshot(path: Path) -> Snapshot:
    """Read and check the snapshot at ``path``; :class:`UnusableSnapshotError` says why it cannot be used.

    :class:`FileNotFoundError` when there is none.
    """
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < len(MAGIC) + _PREFIX.size:
            raise UnusableSnapshotError(f"it is truncated ({size} bytes, shorter than any snapshot)")
        # The users stay where they are: the store reads them from this mapping for as long as it
        # lives (a later snapshot replaces the file by a rename; the mapping keeps the old one).
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        return _parse(data, size)
    except BaseException:
        data.close()
        raise


def _parse(data: mmap.mmap, size: int) -> Snapshot:
    if data[:len(MAGIC)] != MAGIC:
        if data[:6] == MAGIC[:6]:
            raise UnusableSnapshotError(f"it is in a format this version cannot read ({data[:7]!r}, "
                                        f"this one reads {MAGIC[:7]!r})")
        raise UnusableSnapshotError("it is not a kafka-crud snapshot (its first bytes are not the snapshot mark)")
    header_size, header_crc = _PREFIX.unpack_from(data, len(MAGIC))
    start = len(MAGIC) + _PREFIX.size
    raw = bytes(data[start:start + header_size])
    if len(raw) != header_size or zlib.crc32(raw) != header_crc:
        raise UnusableSnapshotError("its header is truncated or corrupt (length or CRC-32 mismatch)")
    try:
        fields = json.loads(raw)
    except ValueError as exc:
        raise UnusableSnapshotError(f"its header is not valid JSON ({exc})") from None
    if fields.get("format") != FORMAT:
        raise UnusableSnapshotError(f"it has format {fields.get('format')!r}: this version reads format {FORMAT}")
    if fields.get("marshal") != marshal.version:
        raise UnusableSnapshotError(f"it was written by a Python whose marshal format is {fields.get('marshal')!r}, "
                                    f"this Python's is {marshal.version}")
    payload = memoryview(data)[start + header_size:]
    try:
        if start + header_size + fields["payload_bytes"] != size:
            raise UnusableSnapshotError(f"it is truncated or has extra bytes: {size} bytes, "
                                        f"{start + header_size + fields['payload_bytes']} expected")
        if zlib.crc32(payload) != fields["payload_crc32"]:
            raise UnusableSnapshotError("its users are corrupt (CRC-32 mismatch)")
        header = SnapshotHeader(
            topic=str(fields["topic"]), topic_id=str(fields["topic_id"]), cluster_id=str(fields["cluster_id"]),
            partitions=int(fields["partitions"]), offsets={int(p): int(o) for p, o in fields["offsets"].items()},
            caught_up_at=float(fields["caught_up_at"]), users=int(fields["users"]),
        )
        state = _state(header, data, start + header_size)
    except (KeyError, TypeError, ValueError, EOFError, struct.error) as exc:
        raise UnusableSnapshotError(f"it cannot be read ({type(exc).__name__}: {exc})") from None
    finally:
        payload.release()
    if len(state.values) != header.users:
        raise UnusableSnapshotError(f"it holds {len(state.values)} users, its header says {header.users}")
    return Snapshot(header, state, size)


def _state(header: SnapshotHeader, data: mmap.mmap, at: int) -> StoreState:
    """The state in ``data`` from ``at``: the marshal frame, then the users' table, used in place."""
    (length,) = _FRAME.unpack_from(data, at)
    at += _FRAME.size
    if at + length > len(data):
        raise ValueError("its first frame runs past its end")
    extra = marshal.loads(data[at:at + length])
    view = memoryview(data)[at + length:]
    try:
        values = SortedTable(view)
    except BaseException:
        view.release()  # else the mapping could not be closed
        raise
    outcomes = [(k, Outcome(fp, status, Position(header.topic, p, o), written))
                for k, fp, status, p, o, written in extra["outcomes"]]
    return StoreState(dict(header.offsets), values, dict(extra["invalid"]), outcomes)
