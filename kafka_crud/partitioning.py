"""Keys to partitions: which partition a producer sends a key to.

A producer picks a record's partition from its key with a hash, modulo the partition count.
Which hash depends on the client: Kafka's Java client, franz-go and kafka-python use murmur2;
librdkafka-based clients (confluent-kafka in Python, Go and .NET, kcat) default to CRC32
(``consistent_random``); Sarama uses FNV-1a. The kit's producers set librdkafka's
``murmur2_random``, so a key lands where a Java client would put it. Two clients with different
hashes on one topic put one key in two partitions, and compaction, which works per partition,
then keeps both.
"""

from __future__ import annotations

import zlib

__all__ = ["crc32_partition", "murmur2", "partition_for"]

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2``: the 32-bit MurmurHash2 of ``data``, as a signed Java int."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = (h * _M) & _MASK
        h ^= k
    tail = data[length - length % 4 :]
    if tail:  # Java's switch falls through: byte i of the tail goes to bits 8*i
        for shift, byte in enumerate(tail):
            h ^= byte << (8 * shift)
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h >= 1 << 31 else h


def _key_bytes(key: str | bytes) -> bytes:
    return key.encode() if isinstance(key, str) else key


def partition_for(key: str | bytes, partitions: int) -> int:
    """The partition Kafka's Java producer (and the kit's, ``murmur2_random``) sends ``key`` to.

    ``murmur2(key)`` made positive (top bit cleared), modulo the partition count.
    """
    return (murmur2(_key_bytes(key)) & 0x7FFFFFFF) % partitions


def crc32_partition(key: str | bytes, partitions: int) -> int:
    """The partition librdkafka's *default* partitioner (``consistent_random``) would choose: CRC32."""
    return zlib.crc32(_key_bytes(key)) % partitions
