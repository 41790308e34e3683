"""Positions in the log as HTTP headers: ``Kafka-Min-Position``, ETags and ``Prefer: wait``.

A *position* ``P-O`` names the record at offset ``O`` of partition ``P``. A user's ETag is the
position of its latest record, quoted: ``"2-5"``. An instance *has applied* ``P-O`` once its store
has applied every record of partition ``P`` up to and including offset ``O``.

    Kafka-Min-Position: 0-12,2-5          answer only once these are applied (read your writes)
    Kafka-Min-Position: "2-5"             the ETag form, as a write's answer gives it
    Kafka-Min-Position: user:2-5          with the topic: 400 on an instance of another topic
    Kafka-Position: 0-12,1-3,2-8          what an instance has applied (every read answers it)
    Prefer: wait=5                        wait up to 5 s (RFC 7240; 0 to 30)

Kafka Streams offers the same idea as a query bound (IQv2 ``PositionBound``): a query answered
only by a store that has caught up with a given position. Parsing here is strict: anything
malformed raises :class:`~kafka_crud.ValidationError` (a 400 that changes nothing).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from .errors import ValidationError

__all__ = [
    "MAX_POSITIONS",
    "MAX_WAIT",
    "Positions",
    "applied_positions",
    "format_positions",
    "merge_positions",
    "parse_etags",
    "parse_min_positions",
    "parse_prefer_wait",
    "reached",
    "users_etag",
]

#: Positions = {partition: offset of the latest record that must be (or has been) applied}.
Positions = dict[int, int]

#: The longest ``Prefer: wait=N`` honoured, in seconds.
MAX_WAIT = 30
#: Positions one ``Kafka-Min-Position`` header may carry.
MAX_POSITIONS = 1000

_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1
_POSITION = re.compile(r'(?:(?P<topic>[A-Za-z0-9._-]{1,249}):)?(?P<q>"?)(?P<p>[0-9]{1,10})-(?P<o>[0-9]{1,19})(?P=q)')
_ENTITY_TAG = re.compile(r'(?:W/)?"[\x21\x23-\x7e\x80-\xff]*"')
_HINT = 'give P-O[,P-O...]: partition and offset, like 2-5 or the ETag "2-5"'


def _elements(value: str) -> list[str]:
    """A comma-separated list's elements, stripped; empty elements are ignored (RFC 9110 5.6.1)."""
    return [e.strip(" \t") for e in value.split(",") if e.strip(" \t")]


def parse_min_positions(value: str, *, topic: str, partitions: int) -> Positions:
    """``Kafka-Min-Position`` as {partition: offset}; the highest offset wins for a partition given twice.

    Raises :class:`ValidationError` for a malformed position, another topic's, or a partition
    that ``topic`` (with ``partitions`` partitions) does not have.
    """
    elements = _elements(value)
    if not elements:
        raise ValidationError(f"Kafka-Min-Position is empty: {_HINT}")
    if len(elements) > MAX_POSITIONS:
        raise ValidationError(f"Kafka-Min-Position has {len(elements)} positions: at most {MAX_POSITIONS}")
    positions: Positions = {}
    for element in elements:
        match = _POSITION.fullmatch(element)
        if match is None:
            raise ValidationError(f"Kafka-Min-Position: {element[:60]!r} is not a position: {_HINT}")
        if match["topic"] is not None and match["topic"] != topic:
            raise ValidationError(
                f"Kafka-Min-Position: {element[:60]!r} is a position in topic {match['topic']!r}, "
                f"and this instance serves {topic!r}"
            )
        partition, offset = int(match["p"]), int(match["o"])
        if partition > _INT32_MAX or offset > _INT64_MAX:
            raise ValidationError(f"Kafka-Min-Position: {element[:60]!r} is out of range")
        if partition >= partitions:
            raise ValidationError(
                f"Kafka-Min-Position: topic {topic!r} has no partition {partition} "
                f"(it has {partitions}: 0 to {partitions - 1})"
            )
        positions[partition] = max(offset, positions.get(partition, -1))
    return positions


def format_positions(positions: Mapping[int, int]) -> str:
    """``{0: 12, 2: 5}`` as ``0-12,2-5``: the value of ``Kafka-Position`` and ``Kafka-Min-Position``."""
    return ",".join(f"{p}-{o}" for p, o in sorted(positions.items()))


def merge_positions(positions: Iterable[Mapping[int, int]]) -> Positions:
    """The highest offset per partition over several position sets."""
    merged: Positions = {}
    for one in positions:
        for partition, offset in one.items():
            merged[partition] = max(offset, merged.get(partition, -1))
    return merged


def applied_positions(applied: Mapping[int, int]) -> Positions:
    """From a store's next offsets to apply ({partition: next}) to the positions applied.

    A partition where nothing is applied yet (next offset 0) has no position.
    """
    return {p: n - 1 for p, n in sorted(applied.items()) if n > 0}


def reached(positions: Mapping[int, int], applied: Mapping[int, int]) -> bool:
    """Whether a store whose next offsets are ``applied`` has applied every one of ``positions``."""
    return all(applied.get(p, 0) > o for p, o in positions.items())


def users_etag(positions: Mapping[int, int]) -> str:
    """The ETag of ``GET /users`` from the positions applied: ``"0-11.1-3.2-8"`` (``"none"`` before any).

    It changes whenever the instance applies a record, so it changes whenever the list may have.
    """
    return '"' + (".".join(f"{p}-{o}" for p, o in sorted(positions.items())) or "none") + '"'


def parse_etags(value: str) -> frozenset[str]:
    """``If-None-Match`` as a set of opaque tags (``W/`` dropped: weak comparison); ``*`` stays ``*``."""
    if value.strip(" \t") == "*":
        return frozenset({"*"})
    elements = _elements(value)
    if not elements:
        raise ValidationError('If-None-Match is empty: give * or ETags like "2-5"')
    tags = set()
    for element in elements:
        if _ENTITY_TAG.fullmatch(element) is None:
            raise ValidationError(
                f'If-None-Match: {element[:60]!r} is not an ETag: give * or quoted ETags like "2-5"'
            )
        tags.add(element.removeprefix("W/"))
    return frozenset(tags)


def parse_prefer_wait(values: Iterable[str]) -> int | None:
    """The ``wait`` preference of ``Prefer`` header lines (RFC 7240), in seconds; None without one.

    Other preferences are ignored, as the RFC asks; of two ``wait`` the first counts. A ``wait``
    that is not 0 to :data:`MAX_WAIT` whole seconds raises :class:`ValidationError`.
    """
    for line in values:
        for preference in _split_outside_quotes(line, ","):
            head = _split_outside_quotes(preference, ";")[0].strip(" \t")
            name, equals, raw = head.partition("=")
            if name.strip(" \t").lower() != "wait":
                continue
            text = raw.strip(" \t")
            if len(text) >= 2 and text[0] == text[-1] == '"':
                text = text[1:-1]
            if not equals or not (text.isascii() and text.isdigit()):
                raise ValidationError(f"Prefer: {head[:60]!r}: wait takes whole seconds, 0 to {MAX_WAIT}, like wait=5")
            seconds = int(text)
            if seconds > MAX_WAIT:
                raise ValidationError(f"Prefer: wait={text[:20]} is too long: at most wait={MAX_WAIT}")
            return seconds
    return None


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return [p for p in parts if p.strip(" \t")] or [""]
