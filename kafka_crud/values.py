"""What a key or a value is, on any topic: text, binary bytes, Schema Registry's framing, or null.

Kafka stores keys and values as bytes and never says what they mean. The kit's own topic holds
users as UTF-8 JSON, but a view of *any* compacted topic meets other things, and shows each for
what it is instead of failing or printing mojibake:

- ``null``: no bytes at all (a tombstone's value, a record without a key).
- ``empty``: zero bytes (``b""``): an ordinary value, not a tombstone.
- ``schema-registry``: Confluent Schema Registry's wire format, as its serializers (Avro,
  Protobuf, JSON Schema) write it: a magic byte 0, the schema id as a 4-byte big-endian integer,
  then the payload. The kit recognises the framing only (schema ids start at 1); it does not ask
  a registry, so bytes that merely look framed (a big-endian number with a leading zero byte,
  say) are shown as framed too.
- ``text``: valid UTF-8 without a NUL byte (JSON included). A NUL byte is valid UTF-8, but
  text hardly ever holds one, and numbers and other binary encodings usually do.
- ``binary``: anything else, shown as a hex preview.
"""

from __future__ import annotations

from typing import Any, Literal

__all__ = ["PREVIEW_BYTES", "ValueKind", "all_text", "hex_preview", "schema_id", "shown", "shown_all", "value_kind"]

ValueKind = Literal["null", "empty", "text", "binary", "schema-registry"]

#: Bytes a preview shows in hex before it says how many more there are.
PREVIEW_BYTES = 16
_FRAME = 5  # Schema Registry's magic byte and 4-byte schema id


def schema_id(raw: bytes | None) -> int | None:
    """The schema id, when ``raw`` has Schema Registry's framing (magic byte 0, 4-byte id >= 1)."""
    if raw is None or len(raw) < _FRAME or raw[0] != 0:
        return None
    found = int.from_bytes(raw[1:_FRAME], "big")
    return found if found >= 1 else None


def value_kind(raw: bytes | None) -> ValueKind:
    """``null``, ``empty``, ``schema-registry``, ``text`` (UTF-8, no NUL byte) or ``binary``, in that order."""
    if raw is None:
        return "null"
    if not raw:
        return "empty"
    if b"\0" in raw:
        return "schema-registry" if schema_id(raw) is not None else "binary"
    try:
        raw.decode()
    except UnicodeDecodeError:
        return "binary"
    return "text"


def hex_preview(raw: bytes, limit: int = PREVIEW_BYTES) -> str:
    """The first ``limit`` bytes in hex, ``…`` when there are more: ``00 ff 10 …``."""
    head = raw[:limit].hex(" ")
    return f"{head} …" if len(raw) > limit else head


def shown(raw: bytes | None) -> str | None:
    """How tables show a key or value: its text, or what it is and a hex preview; None for null.

    ``b'{"name":"Ada"}'`` reads as itself; ``b"\\xff\\x00\\x01"`` as
    ``binary, 3 bytes: ff 00 01``; Schema Registry's framing as
    ``schema-registry id=7, 12 bytes: 00 00 00 00 07 …``. An empty value is ``""`` (not a tombstone).
    """
    if raw is None:
        return None
    if b"\0" not in raw:
        try:
            return raw.decode()
        except UnicodeDecodeError:
            pass
    found = schema_id(raw)
    if found is not None:
        return f"schema-registry id={found}, {len(raw)} bytes: {hex_preview(raw)}"
    return f"binary, {len(raw)} bytes: {hex_preview(raw)}"


def all_text(raws: list[bytes | None]) -> list[str] | None:
    """Each of ``raws`` decoded, when every one is non-empty ``text``; else None.

    For thousands at a time: joined with NUL bytes, they decode in one call, and a NUL byte
    inside one (which would make it binary, or a Schema Registry frame) shows as one separator
    too many.
    """
    if None in raws or b"" in raws:
        return None
    joined = b"\0".join(raws)  # type: ignore[arg-type]  # no None: checked above
    if joined.count(b"\0") != len(raws) - 1:
        return None
    try:
        return joined.decode().split("\0")
    except UnicodeDecodeError:
        return None


def shown_all(raws: list[bytes | None]) -> list[str | None]:
    """:func:`shown` of each of ``raws``, quickly when they are all text."""
    texts: list[Any] | None = all_text(raws)
    return texts if texts is not None else [shown(raw) for raw in raws]
