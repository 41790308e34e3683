"""Where the log diagram puts each record: partitions, lines, offsets, segments (no drawing here).

Used by :mod:`kafka_crud.diagrams`. Positions are in data units: one offset is 1 wide, a
record box is :data:`BOX_H` high, and a partition longer than :data:`PER_LINE` offsets wraps
onto further lines of :data:`LINE_H`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .records import LogRecord

if TYPE_CHECKING:
    from .compaction import CompactionResult
    from .segments import Segment

#: Offsets drawn per partition by default; a longer log is cut there, with "… N more" at its end.
MAX_OFFSETS = 32
#: Partitions drawn by default; the title says how many more there are.
MAX_PARTITIONS = 8
#: Offsets on one line: a longer partition wraps onto further lines (offsets are in the boxes).
PER_LINE = 16

BOX_W, BOX_H, LINE_H, PARTITION_GAP = 0.84, 1.3, 2.6, 0.3  # data units: one offset is 1 wide


@dataclass(frozen=True, slots=True)
class Span:
    """A segment as drawn: offsets [start, end) of one partition, cleaned, dirty or active."""

    partition: int
    start: int
    end: int
    state: str


@dataclass(frozen=True, slots=True)
class Layout:
    """Where each offset goes: partitions top to bottom, each on one line or wrapped onto more."""

    partitions: list[int]
    hidden_partitions: int
    low: int
    high: int  # the last offset drawn
    per_line: int
    lines: int
    overflow: bool

    @property
    def slot_inches(self) -> float:
        return 0.74 if self.per_line <= 12 else 0.62

    @property
    def font(self) -> float:
        return 9.0 if self.per_line <= 12 else 8.0

    def line_of(self, offset: int) -> int:
        return (offset - self.low) // self.per_line

    def line_range(self, line: int) -> tuple[int, int]:
        """The first and last offset of a line."""
        first = self.low + line * self.per_line
        return first, min(first + self.per_line - 1, self.high)

    def y(self, partition: int, line: int = 0) -> float:
        index = self.partitions.index(partition)
        return -(index * self.lines + line) * LINE_H - index * PARTITION_GAP

    def x(self, offset: int) -> float:
        return self.low + (offset - self.low) % self.per_line

    def shows(self, partition: int, offset: int) -> bool:
        return partition in self.partitions and self.low <= offset <= self.high


def short_key(key: bytes | None) -> str:
    if key is None:
        return "(no key)"
    text = key.decode("utf-8", "replace")
    if text.startswith("__kafka_crud_roll_"):
        return "roll"
    head = text.split("@", 1)[0] or text
    return head if len(head) <= 8 else head[:7] + "…"


def hint(record: LogRecord) -> str:
    """A few characters saying what the value is: the user's name, null, or ""."""
    if record.value is None:
        return "null"
    if record.value == b"":
        return '""'
    text = record.value.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("name"), str):
        text = data["name"] or "(no name)"
    text = text.split(" ", 1)[0] if len(text) > 9 else text
    return text if len(text) <= 9 else text[:8] + "…"


def spans_from_segments(segments: Iterable[Segment]) -> list[Span]:
    by_partition: dict[int, list[Segment]] = {}
    for segment in sorted(segments, key=lambda s: (s.partition, s.base_offset)):
        by_partition.setdefault(segment.partition, []).append(segment)
    spans: list[Span] = []
    for partition, rows in by_partition.items():
        for i, segment in enumerate(rows):
            if i + 1 < len(rows):
                end = rows[i + 1].base_offset
            else:
                last = segment.last_offset if segment.last_offset is not None else segment.base_offset
                end = max(last + 1, segment.base_offset + 1)
            state = "active" if segment.active else "cleaned" if segment.cleaned else "dirty"
            spans.append(Span(partition, segment.base_offset, end, state))
    return spans


def plan(
    groups: Sequence[Sequence[LogRecord]], spans: Sequence[Span], max_offsets: int, max_partitions: int
) -> Layout:
    records = [r for group in groups for r in group]
    offsets = [r.offset for r in records] + [s.start for s in spans]
    every = sorted({r.partition for r in records} | {s.partition for s in spans}) or [0]
    low, high = min(offsets, default=0), max(offsets, default=0)
    overflow = high - low + 1 > max_offsets
    high = low + max_offsets - 1 if overflow else high
    slots = high - low + 1
    lines = -(-slots // PER_LINE)
    per_line = -(-slots // lines)  # balanced: 20 offsets are two lines of 10, not 16 and 4
    shown = every[:max_partitions]
    return Layout(shown, len(every) - len(shown), low, high, per_line, lines, overflow)


def figure_size(layout: Layout, panels: int) -> tuple[float, float]:
    width = 1.9 + layout.per_line * layout.slot_inches + (1.1 if layout.overflow else 0.2)
    rows = len(layout.partitions) * layout.lines
    height = panels * (0.8 + 1.05 * rows + 0.15 * len(layout.partitions)) + 0.5
    return max(width, 6.0), height


def marker_spans(result: CompactionResult) -> list[Span]:
    """The segments a pass leaves, from its markers: cleaned below the roll record, active from it."""
    ends = {r.partition: r.offset + 1 for r in sorted(result.after, key=lambda r: r.offset)}
    spans = []
    for partition, marker in sorted(result.rolled.items()):
        if marker > 0:
            spans.append(Span(partition, 0, marker, "cleaned"))
        spans.append(Span(partition, marker, max(marker + 1, ends.get(partition, 0)), "active"))
    return spans
