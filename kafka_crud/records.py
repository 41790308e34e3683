"""The records the kit reads and writes, and the words it uses for them.

Terms, used the same way everywhere in the kit:

- **offset**: the position of a record within its partition, assigned by the broker, never
  reused. After compaction, offsets have gaps: survivors keep their offsets.
- **end offset** (high watermark): the offset after the last record a consumer may read (see
  :mod:`kafka_crud.connection`). It is not a count of records: on a compacted topic fewer remain.
- **tombstone**: a record whose value is null (``None``). It deletes its key. An *empty*
  value (``b""``) is not a tombstone: it is an ordinary record that compaction keeps.
- **live**: the latest record of its key, and not a tombstone: the current value of that key.
- **superseded**: a record with a later record of the same key in the same partition;
  compaction may remove it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from .errors import ValidationError
from .values import ValueKind, value_kind

__all__ = [
    "MARKER_HEADER",
    "MARKER_ROLL",
    "MAX_EMAIL_LENGTH",
    "LogRecord",
    "Position",
    "RecordKind",
    "RecordStatus",
    "User",
    "classify",
    "validate_email",
]

MAX_EMAIL_LENGTH = 254
#: The record header that marks a record the kit wrote for its own mechanics (see
#: :mod:`kafka_crud.rolling`), with its value for a roll marker.
MARKER_HEADER = "kafka-crud-marker"
MARKER_ROLL = b"roll"
MAX_NAME_LENGTH = 1000

RecordKind = Literal["put", "tombstone", "empty value"]
RecordStatus = Literal["live", "superseded", "tombstone"]


class Position(NamedTuple):
    """Where a record landed: the topic, partition and offset the broker acknowledged."""

    topic: str
    """The topic written to."""
    partition: int
    """The partition the key hashed to."""
    offset: int
    """The record's offset in that partition (not the end offset, which is this + 1)."""

    @property
    def etag(self) -> str:
        """An HTTP entity tag naming this version of a user: ``"<partition>-<offset>"``."""
        return f'"{self.partition}-{self.offset}"'


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One record as it is in the log."""

    topic: str
    """The topic it was read from."""
    partition: int
    """Its partition."""
    offset: int
    """Its offset in that partition."""
    timestamp: int
    """Milliseconds since the epoch (CreateTime, as set by the producer)."""
    key: bytes | None
    """The key (on the kit's topic, the user's email as UTF-8; on others, whatever was written)."""
    value: bytes | None
    """The value; None for a tombstone."""
    headers: list[tuple[str, bytes | None]] | None = None
    """The record's headers as (name, value) pairs, in order; None when it has none."""

    @property
    def kind(self) -> RecordKind:
        """``put``, ``tombstone`` (null value) or ``empty value`` (``b""``, not a tombstone)."""
        if self.value is None:
            return "tombstone"
        return "empty value" if self.value == b"" else "put"

    @property
    def value_kind(self) -> ValueKind:
        """What the value's bytes are: null, empty, text, binary or schema-registry (:mod:`kafka_crud.values`)."""
        return value_kind(self.value)

    @property
    def key_kind(self) -> ValueKind:
        """What the key's bytes are, in the words of :attr:`value_kind` (null: no key)."""
        return value_kind(self.key)

    @property
    def position(self) -> Position:
        return Position(self.topic, self.partition, self.offset)

    @property
    def is_marker(self) -> bool:
        """True for a record the kit wrote for its own mechanics (a roll marker), not a lesson's."""
        return any(name == MARKER_HEADER for name, _ in self.headers or ())


@dataclass(frozen=True, slots=True)
class User:
    """A user as stored in the topic: the key is ``email``, the value is this as JSON.

    Only ``email`` and ``name`` are accepted. Unknown fields are rejected, not dropped: a client
    that sends ``{"email": ..., "age": 3}`` gets a 400 instead of a 200 that silently lost
    ``age``.
    """

    email: str
    """The key of the record: non-empty, no spaces or control characters, at most 254 characters."""
    name: str = ""
    """Any text up to 1000 characters; empty when not given."""

    def __post_init__(self) -> None:
        validate_email(self.email)
        if not isinstance(self.name, str):
            raise ValidationError(f"'name' must be a string, not {_json_type(self.name)}")
        if len(self.name) > MAX_NAME_LENGTH:
            raise ValidationError(f"'name' is longer than {MAX_NAME_LENGTH} characters")
        if any(ord(c) < 32 or ord(c) == 127 for c in self.name):
            raise ValidationError("'name' must not contain control characters")
        if any(0xD800 <= ord(c) <= 0xDFFF for c in self.name):
            raise ValidationError("'name' must be valid Unicode text")

    def to_dict(self) -> dict[str, str]:
        return {"email": self.email, "name": self.name}

    def to_json(self) -> bytes:
        """The record value: compact UTF-8 JSON with ``email`` and ``name``."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, data: Any, *, email: str | None = None) -> User:
        """Validate a decoded JSON object; ``email`` (the URL's) must match the body's if both are given."""
        if not isinstance(data, dict):
            raise ValidationError(f"A user must be a JSON object, not {_json_type(data)}")
        unknown = sorted(set(data) - {"email", "name"})
        if unknown:
            raise ValidationError(
                f"Unknown field(s) {', '.join(map(repr, unknown))}: a user has only 'email' and 'name'"
            )
        body_email = data.get("email")
        if "email" in data and not isinstance(body_email, str):  # null included: it is no email
            raise ValidationError(f"'email' must be a string, not {_json_type(body_email)}")
        if email is not None and body_email is not None and body_email != email:
            raise ValidationError(
                f"The email in the URL ({email!r}) and in the body ({body_email!r}) differ: "
                "send one, or the same in both"
            )
        key = email if email is not None else body_email
        if key is None:
            raise ValidationError("Missing 'email': give it in the body or as ?email=")
        return cls(email=key, name=data.get("name", ""))

    @classmethod
    def from_json(cls, raw: bytes | str, *, email: str | None = None) -> User:
        """Parse and validate a JSON user; raises :class:`ValidationError` with the reason."""
        if isinstance(raw, bytes):
            # JSON between systems is UTF-8 (RFC 8259), which json.loads would not insist on: it
            # also reads UTF-16 and UTF-32. A byte order mark may be ignored, so it is.
            try:
                raw = raw.decode("utf-8-sig")
            except UnicodeDecodeError:
                raise ValidationError("The body is not UTF-8 text") from None
        try:
            data = json.loads(raw, object_pairs_hook=_no_duplicate_keys)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"Malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        except RecursionError:
            raise ValidationError("Malformed JSON: nested too deeply") from None
        except ValidationError:
            raise
        except ValueError:  # an integer of more than 4300 digits, which Python refuses to convert
            raise ValidationError("Malformed JSON: a number too long to read") from None
        return cls.from_dict(data, email=email)


def validate_email(email: object) -> str:
    """Return ``email`` if it can be a key, else raise :class:`ValidationError` saying why."""
    if not isinstance(email, str):
        raise ValidationError(f"'email' must be a string, not {_json_type(email)}")
    if not email:
        raise ValidationError("'email' must not be empty")
    if len(email) > MAX_EMAIL_LENGTH:
        raise ValidationError(f"'email' is longer than {MAX_EMAIL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in email):
        raise ValidationError("'email' must not contain spaces or control characters")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in email):
        raise ValidationError("'email' must be valid Unicode text")
    if "@" not in email.strip("@"):
        raise ValidationError(f"'email' must look like name@domain, not {email!r}")
    return email


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise ValidationError(f"Duplicate key {key!r} in the JSON object: send each field once")
        data[key] = value
    return data


def _json_type(value: object) -> str:
    return {
        type(None): "null", bool: "a boolean", int: "a number", float: "a number",
        str: "a string", list: "an array", dict: "an object",
    }.get(type(value), type(value).__name__)


def classify(records: list[LogRecord]) -> list[tuple[RecordStatus, int | None]]:
    """For each record (in the order given): its status and the offset of the record superseding it.

    ``superseded`` when a later record in the same partition has the same key (compaction may
    remove it); else ``tombstone`` for a null value; else ``live``. A record without a key is
    never superseded.
    """
    newest_first = sorted(records, key=lambda r: (r.partition, -r.offset))
    result: list[tuple[RecordStatus, int | None]] = []
    later: dict[tuple[int, bytes], int] = {}
    for record in newest_first:
        slot = (record.partition, record.key) if record.key is not None else None
        newer = later.get(slot) if slot else None
        if slot:
            later[slot] = record.offset
        status: RecordStatus = "superseded" if newer is not None else ("tombstone" if record.value is None else "live")
        result.append((status, newer))
    by_position = {(r.partition, r.offset): s for r, s in zip(newest_first, result, strict=True)}
    return [by_position[(r.partition, r.offset)] for r in records]
