"""Diagrams of the log: each partition a row of records, the supersedes arrows, the segments.

:func:`plot_partitions` draws what :meth:`Kafka.read_log <kafka_crud.Kafka.read_log>` returned:
each partition a row of boxes, one per record at its offset, with its key and a hint of its
value. A **live** record (the latest of its key, not a tombstone) is blue and marked ●; a
**superseded** one is grey, marked ○, with an arrow to the record of the same key, later
offset and same partition that supersedes it; a **tombstone** (null value) is hatched and
marked ✝, whatever its status. Records the cleaner removed (``removed=``) are drawn dashed and
struck out at their offsets: survivors keep their offsets, so the gaps show. With
``segments=`` (from :func:`~kafka_crud.list_segments`), each row also shows its segments by
base offset: **cleaned**, **dirty**, and the **active** one appends go to.

:func:`plot_compaction_story` draws a :class:`~kafka_crud.CompactionResult`: the log before
above, after below, on the same offset axis. The system diagrams (:func:`plot_overview`,
:func:`plot_partition_segments`, :func:`plot_group_vs_assign`) are in
:mod:`kafka_crud.system_diagrams` and exported here too.

Diagrams only draw: they take records and segments, never talk to Kafka. Every status is a
symbol or a word as well as a colour (Okabe–Ito hues, safe for red-green colour blindness).
Each drawn shape has a gid saying what it is (``record 0:3``, ``removed 0:1``,
``supersedes 0:1->3``, ``segment 0:4 active``), for tests and for anyone post-processing the
figure. Needs matplotlib (``pip install kafka-crud[views]``).
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ._log_layout import (
    BOX_H,
    BOX_W,
    MAX_OFFSETS,
    MAX_PARTITIONS,
    PER_LINE,
    Layout,
    Span,
    figure_size,
    hint,
    marker_spans,
    plan,
    short_key,
    spans_from_segments,
)
from .records import LogRecord, classify
from .system_diagrams import plot_group_vs_assign, plot_overview, plot_partition_segments
from .views import MARK_COLOURS, STATUS_COLOURS, STATUS_SYMBOLS

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .compaction import CompactionResult
    from .segments import Segment

__all__ = [
    "MAX_OFFSETS",
    "MAX_PARTITIONS",
    "PER_LINE",
    "plot_compaction_story",
    "plot_group_vs_assign",
    "plot_overview",
    "plot_partition_segments",
    "plot_partitions",
]

_SEGMENT_COLOURS = {"cleaned": "#cdeee3", "dirty": "#f3dcea", "active": "#faf3b5"}
_TOMBSTONE_HATCH = "#eeb08a"
_REMOVED_GREY = "#9a9a9a"
_INK = "#555555"


def _arc(ax: Axes, layout: Layout, record: LogRecord, newer: int) -> None:
    """The superseded record's arrow to the record superseding it (a stub when that is on another line)."""
    from matplotlib.patches import FancyArrowPatch
    from matplotlib.path import Path

    line = layout.line_of(record.offset)
    top = layout.y(record.partition, line) + BOX_H
    old = layout.x(record.offset)
    gid = f"supersedes {record.partition}:{record.offset}->{newer}"
    if newer <= layout.high and layout.line_of(newer) == line:
        new = layout.x(newer)
        lift = min(0.3 + 0.1 * (new - old), 0.75)
        path = Path([(old + 0.12, top), ((old + new) / 2, top + 2 * lift), (new - 0.12, top)],
                    [Path.MOVETO, Path.CURVE3, Path.CURVE3])
        ax.add_patch(FancyArrowPatch(path=path, arrowstyle="-|>", mutation_scale=10, linewidth=1.1,
                                     color=_INK, gid=gid, zorder=1))
        return
    # On a later line, or beyond the last offset drawn: a short arrow saying where it is.
    ax.add_patch(FancyArrowPatch((old, top), (old + 0.42, top + 0.32), arrowstyle="-|>", mutation_scale=8,
                                 linewidth=1.0, color=_INK, connectionstyle="arc3,rad=-0.3", gid=gid, zorder=1))
    ax.text(old + 0.46, top + 0.34, f"{newer}", fontsize=layout.font - 2, color=_INK, ha="left", va="center")


def _record_box(ax: Axes, layout: Layout, record: LogRecord, status: str, *, removed: bool) -> None:
    from matplotlib.patches import FancyBboxPatch

    x, y, font = layout.x(record.offset), layout.y(record.partition, layout.line_of(record.offset)), layout.font
    tombstone = record.value is None
    style: str | tuple[int, tuple[int, int]] = "-"
    if removed:
        face, edge, text, style, weight = "white", _REMOVED_GREY, _REMOVED_GREY, (0, (3, 2)), 1.1
    else:
        face, text = STATUS_COLOURS[status]
        edge, weight = MARK_COLOURS[status], 1.6 if status == "live" else 1.1
    box = FancyBboxPatch(
        (x - BOX_W / 2, y), BOX_W, BOX_H, boxstyle="round,pad=0,rounding_size=0.08",
        facecolor=face, edgecolor=edge, linewidth=weight, linestyle=style, zorder=2,
        gid=f"{'removed' if removed else 'record'} {record.partition}:{record.offset}",
    )
    if tombstone:
        box.set_hatch("////")
        if hasattr(box, "set_hatchcolor"):  # matplotlib 3.10+: a lighter hatch, the text stays readable
            box.set_hatchcolor(_REMOVED_GREY if removed else _TOMBSTONE_HATCH)
    ax.add_patch(box)
    symbol = "" if removed else STATUS_SYMBOLS["tombstone" if tombstone else status]
    if not removed and tombstone and status == "superseded":
        symbol = STATUS_SYMBOLS["superseded"] + STATUS_SYMBOLS["tombstone"]
    plain: dict[str, Any] = {"zorder": 3, "color": text}
    ax.text(x - BOX_W / 2 + 0.07, y + BOX_H - 0.08, str(record.offset), fontsize=font - 1.5,
            ha="left", va="top", **plain)
    ax.text(x + BOX_W / 2 - 0.07, y + BOX_H - 0.08, symbol, fontsize=font - 1, ha="right", va="top", **plain)
    ax.text(x, y + 0.5 * BOX_H, short_key(record.key), fontsize=font, ha="center", va="center",
            fontweight="bold", **plain)
    ax.text(x, y + 0.2 * BOX_H, "removed" if removed else hint(record), fontsize=font - 1.5, ha="center",
            va="center", style="italic" if removed else "normal", **plain)
    if removed:  # struck out: a line through the key
        ax.plot([x - 0.3, x + 0.3], [y + 0.5 * BOX_H] * 2, color=_REMOVED_GREY, linewidth=1.2, zorder=3)


def _draw_spans(ax: Axes, spans: Sequence[Span], layout: Layout) -> None:
    from matplotlib.patches import Rectangle

    for span in spans:
        if span.partition not in layout.partitions:
            continue
        for line in range(layout.lines):
            first, last = layout.line_range(line)
            start, end = max(span.start, first), min(span.end, last + 1)
            if start >= end:
                continue
            y, x = layout.y(span.partition, line), layout.x(start)
            ax.add_patch(Rectangle(
                (x - 0.46, y - 0.5), end - start - 0.08, 0.36, facecolor=_SEGMENT_COLOURS[span.state],
                edgecolor=_INK, linewidth=0.8, zorder=1,
                gid=f"segment {span.partition}:{span.start} {span.state}" if start == span.start else None,
            ))
            ax.text(x + (end - start - 1) / 2, y - 0.32, span.state, fontsize=layout.font - 1.5, ha="center",
                    va="center", fontweight="bold" if span.state == "active" else "normal", color="#222222")
            if start == span.start > layout.low:  # the boundary: a new segment starts at its base offset
                ax.plot([x - 0.5] * 2, [y - 0.55, y + BOX_H + 0.12], color=_INK, linewidth=0.9,
                        linestyle=(0, (4, 2)), zorder=1)


def _draw_log(
    ax: Axes, records: Sequence[LogRecord], removed: Sequence[LogRecord], spans: Sequence[Span],
    layout: Layout, title: str,
) -> None:
    beyond: Counter[int] = Counter()
    last_beyond: dict[int, int] = {}
    for record in [*records, *removed]:
        if record.offset > layout.high:
            beyond[record.partition] += 1
            last_beyond[record.partition] = max(last_beyond.get(record.partition, 0), record.offset)
    for record in removed:
        if layout.shows(record.partition, record.offset):
            _record_box(ax, layout, record, "superseded", removed=True)
    for record, (status, newer) in zip(records, classify(list(records)), strict=True):
        if layout.shows(record.partition, record.offset):
            _record_box(ax, layout, record, status, removed=False)
            if newer is not None:
                _arc(ax, layout, record, newer)
    _draw_spans(ax, spans, layout)
    for partition, count in beyond.items():
        if partition in layout.partitions:
            ax.text(layout.x(layout.high) + 0.65, layout.y(partition, layout.lines - 1) + BOX_H / 2,
                    f"… {count} more\n(to offset {last_beyond[partition]})", fontsize=layout.font - 1,
                    ha="left", va="center", color="#333333")
    _frame_axes(ax, layout, title, bool(spans))


def _frame_axes(ax: Axes, layout: Layout, title: str, spans: bool) -> None:
    font = layout.font
    right = layout.low + layout.per_line - 1 + (2.2 if layout.overflow else 0.6)
    bottom = layout.y(layout.partitions[-1], layout.lines - 1) - (0.65 if spans else 0.3)
    ax.set_xlim(layout.low - 0.6, right)
    ax.set_ylim(bottom, BOX_H + 1.0)
    ticks, labels = [], []
    for partition in layout.partitions:
        for line in range(layout.lines):
            first, last = layout.line_range(line)
            ticks.append(layout.y(partition, line) + BOX_H / 2)
            where = f"offsets {first}–{last}" if layout.lines > 1 else ""
            labels.append(f"partition {partition}\n{where}" if line == 0 else where)
    ax.set_yticks(ticks, [label.strip() for label in labels], fontsize=font)
    ax.tick_params(axis="y", length=0)
    if layout.lines == 1:
        ax.set_xticks(range(layout.low, layout.high + 1))
        ax.tick_params(axis="x", labelsize=font - 1.5, colors="#444444")
        ax.set_xlabel("offset", fontsize=font - 1)
    else:  # wrapped: each box says its offset
        ax.set_xticks([])
        ax.spines["bottom"].set_visible(False)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    if layout.hidden_partitions:
        title += f" (partitions {layout.partitions[0]}–{layout.partitions[-1]} shown; {layout.hidden_partitions} more)"
    heading, _, detail = title.partition("\n")
    if detail:  # a bold heading, and what it means in plain text under it, wrapped to the figure
        width = ax.get_figure(root=True).get_figwidth()  # type: ignore[union-attr]
        lines = textwrap.wrap(detail, width=max(int((width - 1.3) * 72 / (font * 0.55)), 30))
        ax.set_title("\n".join(lines), loc="left", fontsize=font, color="#333333")
        ax.annotate(heading, (0, 1), xycoords="axes fraction", xytext=(0, font * (1.1 + 1.25 * len(lines))),
                    textcoords="offset points", fontsize=font + 2, fontweight="bold", ha="left", va="bottom",
                    annotation_clip=False)
    else:
        ax.set_title(heading, loc="left", fontsize=font + 2, fontweight="bold")


def _legend(figure: Figure, layout: Layout, *, removed: bool, states: Iterable[str]) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Artist] = [
        Patch(facecolor=STATUS_COLOURS["live"][0], edgecolor=MARK_COLOURS["live"], label="● live"),
        Patch(facecolor=STATUS_COLOURS["superseded"][0], edgecolor=MARK_COLOURS["superseded"],
              label="○ superseded"),
        Line2D([], [], color=_INK, marker=">", markersize=5, label="superseded by (same key, later offset)"),
        Patch(facecolor=STATUS_COLOURS["tombstone"][0], edgecolor=MARK_COLOURS["tombstone"], hatch="////",
              label="✝ tombstone (null value)"),
    ]
    if removed:
        handles.append(Patch(facecolor="white", edgecolor=_REMOVED_GREY, linestyle=(0, (3, 2)),
                             label="removed by compaction"))
    present = set(states)
    handles.extend(Patch(facecolor=c, edgecolor=_INK, label=f"{s} segment")
                   for s, c in _SEGMENT_COLOURS.items() if s in present)
    width = figure.get_figwidth()
    columns = 4 if width >= 7.6 else 3 if width >= 5.6 else 2
    figure.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), columns),
                  fontsize=layout.font - 1, frameon=False, handlelength=1.6, columnspacing=1.6)


def _without_markers(groups: list[list[LogRecord]], markers: bool) -> tuple[list[list[LogRecord]], int]:
    """Each group without the kit's roll markers (unless ``markers``), and how many distinct ones were left out."""
    if markers:
        return groups, 0
    hidden = {(r.partition, r.offset) for group in groups for r in group if r.is_marker}
    return [[r for r in group if not r.is_marker] for group in groups], len(hidden)


def _hidden_note(hidden: int) -> str:
    return f" ({hidden} roll marker{'s' if hidden != 1 else ''} of the kit hidden)" if hidden else ""


def plot_partitions(
    records: Iterable[LogRecord],
    *,
    segments: Iterable[Segment] | None = None,
    title: str | None = None,
    removed: Iterable[LogRecord] | None = None,
    max_offsets: int = MAX_OFFSETS,
    max_partitions: int = MAX_PARTITIONS,
    markers: bool = False,
) -> Figure:
    """The log as rows of records, one row per partition, by offset (see the module's docstring).

    The kit's roll markers are left out unless ``markers``; the title says how many.

    ``records`` are the records in the log now (:meth:`Kafka.read_log
    <kafka_crud.Kafka.read_log>`); ``removed`` records the cleaner removed, drawn dashed and
    struck out at their offsets (:attr:`CompactionResult.removed
    <kafka_crud.CompactionResult.removed>`); ``segments`` the topic's segments
    (:func:`~kafka_crud.list_segments`), drawn under each row. A partition of more than
    :data:`PER_LINE` offsets wraps onto further lines; at most ``max_offsets`` offsets and
    ``max_partitions`` partitions are drawn, the rest are counted ("… N more"). Returns a new
    figure.
    """
    from matplotlib.figure import Figure

    (shown, gone), hidden = _without_markers([list(records), list(removed or [])], markers)
    spans = spans_from_segments(segments) if segments is not None else []
    layout = plan([shown, gone], spans, max_offsets, max_partitions)
    figure = Figure(figsize=figure_size(layout, 1), layout="constrained")
    partitions = len({r.partition for r in shown})
    _draw_log(figure.subplots(), shown, gone, spans, layout,
              (title or f"{len(shown)} records in {partitions} partition{'s' if partitions != 1 else ''}")
              + _hidden_note(hidden))
    _legend(figure, layout, removed=bool(gone), states=[s.state for s in spans])
    return figure


def plot_compaction_story(
    result: CompactionResult,
    *,
    segments: Iterable[Segment] | None = None,
    title: str | None = None,
    max_offsets: int = MAX_OFFSETS,
    max_partitions: int = MAX_PARTITIONS,
    markers: bool = False,
) -> Figure:
    """A cleaner pass: the log before it above, after it below, on the same offset axis.

    The kit's roll markers are left out unless ``markers``; the titles say how many.

    Before: every record, superseded ones linked to the record that supersedes them. After: the
    survivors at their unchanged offsets, and the removed records dashed and struck out where
    they were. The after half shows ``segments`` when given (:func:`~kafka_crud.list_segments`
    after the pass), else what the pass's ``rolled`` offsets say: below the roll record everything is
    cleaned, and the roll record starts the active segment.
    """
    from matplotlib.figure import Figure

    (before, after, removed), hidden = _without_markers([result.before, result.after, result.removed], markers)
    spans = spans_from_segments(segments) if segments is not None else marker_spans(result)
    layout = plan([before, after], spans, max_offsets, max_partitions)
    width, height = figure_size(layout, 2)
    figure = Figure(figsize=(width, height + (0.4 if title else 0.0)), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True)
    superseded = sum(1 for status, _ in classify(before) if status == "superseded")
    _draw_log(top, before, [], [], layout,
              f"before: {len(before)} records\n{superseded} superseded (○, an arrow to the record that "
              "supersedes it): the cleaner may remove them")
    was = {(r.partition, r.offset) for r in before}
    new = [r for r in after if (r.partition, r.offset) not in was]
    appended = f" {len(new)} appended since: the writes that rolled the segments." if new else ""
    _draw_log(bottom, after, removed, spans, layout,
              f"after: {len(after)} records\n{len(removed)} removed (dashed, struck out); survivors keep their "
              f"offsets, so the gaps show.{appended}{_hidden_note(hidden)}")
    _legend(figure, layout, removed=True, states=[s.state for s in spans])
    if layout.lines == 1:
        top.tick_params(axis="x", labelbottom=True)
        top.set_xlabel("")
    if title:
        figure.suptitle(title, fontsize=layout.font + 3, fontweight="bold")
    return figure
