"""A sorted, read-only table of users in a byte buffer: a snapshot's users, used where they lie.

Loading a million users into a dictionary builds four or five Python objects per user, about
0.7 s of CPU; a restart from a snapshot would spend more time on that than on the replay. A
:class:`SortedTable` instead looks a key up by binary search in the buffer (a memory-mapped
file), about twenty probes, and builds objects only for the users asked for. The store keeps
the changes made since in a dictionary above it (:class:`kafka_crud.store.UserStore`)::

    8 bytes        count N                         big-endian
    N x 8 bytes    where each entry starts, from the start of the table, in key order
    entries        key length (4), value length (4), partition (4), offset (8), key, value
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterable, Iterator

__all__ = ["Entry", "SortedTable", "pack_table", "table_size"]

#: A user as the store holds it: the JSON value, with the partition and offset of its record.
Entry = tuple[bytes, int, int]

_COUNT = struct.Struct(">Q")
_SLOT = struct.Struct(">Q")
_HEAD = struct.Struct(">IIiq")


def pack_table(items: Iterable[tuple[bytes, Entry]]) -> list[bytes]:
    """The table of ``items`` (in increasing key order), as chunks of bytes to write in turn."""
    chunks: list[bytes] = [b"", b""]  # the count and the slots, once known
    starts = array("Q")
    at = 0
    previous: bytes | None = None
    for key, (value, partition, offset) in items:
        if previous is not None and key <= previous:
            raise ValueError("the items are not in increasing key order")
        previous = key
        chunk = _HEAD.pack(len(key), len(value), partition, offset) + key + value
        starts.append(at)
        chunks.append(chunk)
        at += len(chunk)
    base = _COUNT.size + _SLOT.size * len(starts)
    slots = array("Q", (start + base for start in starts))
    if sys.byteorder == "little":
        slots.byteswap()
    chunks[0], chunks[1] = _COUNT.pack(len(starts)), slots.tobytes()
    return chunks


def table_size(chunks: list[bytes]) -> int:
    """How many entries the chunks :func:`pack_table` returned hold."""
    return len(chunks) - 2


class SortedTable:
    """The table :func:`pack_table` wrote, read in place from ``buffer`` (bytes, a memoryview, an mmap).

    Opening it checks the count and the first and last entries against the buffer's size; the
    content is the caller's to check (a snapshot's CRC-32). A corrupt slot could only make a
    lookup fail (``struct.error``) or read wrong bytes: Python never reads outside the buffer.
    """

    def __init__(self, buffer: bytes | memoryview) -> None:
        self._buf = buffer
        size = len(buffer)
        if size < _COUNT.size:
            raise ValueError("the table is shorter than its count")
        self._n: int = _COUNT.unpack_from(buffer, 0)[0]
        self._slots_end = _COUNT.size + _SLOT.size * self._n
        if self._slots_end > size:
            raise ValueError(f"the table announces {self._n} entries, more than it can hold")
        # The slots as native integers, for the probes: big-endian on disk, swapped once, in C.
        self._starts = array("Q")
        if self._starts.itemsize != _SLOT.size:
            raise RuntimeError("this platform has no 8-byte array type")
        self._starts.frombytes(buffer[_COUNT.size:self._slots_end])
        if sys.byteorder == "little":
            self._starts.byteswap()
        if self._n:
            first, last = self._starts[0], self._starts[-1]
            if first != self._slots_end or not first <= last <= size - _HEAD.size:
                raise ValueError("an entry of the table lies outside it")
            key_len, value_len, _, _ = _HEAD.unpack_from(buffer, last)
            if last + _HEAD.size + key_len + value_len != size:
                raise ValueError("the table's last entry does not end where the table does")
        elif self._slots_end != size:
            raise ValueError("an empty table with bytes after it")

    def __len__(self) -> int:
        return self._n

    def _key(self, i: int) -> bytes:
        start = self._starts[i]
        (key_len,) = struct.unpack_from(">I", self._buf, start)
        return bytes(self._buf[start + _HEAD.size:start + _HEAD.size + key_len])

    def _entry(self, i: int) -> tuple[bytes, Entry]:
        start = self._starts[i]
        key_len, value_len, partition, offset = _HEAD.unpack_from(self._buf, start)
        at = start + _HEAD.size
        return (bytes(self._buf[at:at + key_len]),
                (bytes(self._buf[at + key_len:at + key_len + value_len]), partition, offset))

    def get(self, key: bytes) -> Entry | None:
        """The entry of ``key``, or None: a binary search, about log2(N) probes."""
        lo, hi = 0, self._n
        while lo < hi:
            mid = (lo + hi) // 2
            found = self._key(mid)
            if found < key:
                lo = mid + 1
            elif found > key:
                hi = mid
            else:
                return self._entry(mid)[1]
        return None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and self.get(key) is not None

    def items(self) -> Iterator[tuple[bytes, Entry]]:
        """Every (key, entry), in key order."""
        for i in range(self._n):
            yield self._entry(i)

    def __iter__(self) -> Iterator[bytes]:
        for i in range(self._n):
            yield self._key(i)
