"""The log and system diagrams, drawn headless from records built by hand: no broker needed."""

from __future__ import annotations

import io
import json
from pathlib import Path

import matplotlib
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from kafka_crud import (
    CompactionResult,
    LogRecord,
    Segment,
    partition_for,
    plot_compaction_story,
    plot_group_vs_assign,
    plot_overview,
    plot_partition_segments,
    plot_partitions,
)
from kafka_crud.diagrams import MAX_OFFSETS
from kafka_crud.records import MARKER_HEADER, MARKER_ROLL
from kafka_crud.rolling import marker_key
from kafka_crud.views import STATUS_COLOURS

matplotlib.use("Agg")  # headless: no display needed (the diagrams never open a window)


def _record(partition: int, offset: int, email: str, name: str | None) -> LogRecord:
    value = None if name is None else json.dumps({"email": email, "name": name}).encode()
    return LogRecord("user", partition, offset, 1_700_000_000_000 + offset, email.encode(), value)


def _history() -> list[LogRecord]:
    """Seven writes on three partitions: alan superseded by his tombstone, ada by her second put."""
    return [
        _record(0, 0, "alan@example.com", "Alan Turing"),
        _record(0, 1, "grace@example.com", "Grace Hopper"),
        _record(0, 2, "edsger@example.com", "Edsger Dijkstra"),
        _record(0, 3, "alan@example.com", None),
        _record(1, 0, "barbara@example.com", "Barbara Liskov"),
        _record(2, 0, "ada@example.com", "Ada Lovelace"),
        _record(2, 1, "ada@example.com", "Ada King"),
    ]


def _compaction() -> CompactionResult:
    before = _history()
    rolls = [
        LogRecord("user", p, o, 1_700_000_001_000, marker_key(p, 3).encode(), None, [(MARKER_HEADER, MARKER_ROLL)])
        for p, o in ((0, 4), (1, 1), (2, 2))
    ]
    gone = {(0, 0), (2, 0)}
    after = [r for r in before if (r.partition, r.offset) not in gone] + rolls
    return CompactionResult("user", before, after, {0: 4, 1: 1, 2: 2}, 0.5)


def _patches(figure: Figure) -> dict[str, Patch]:
    return {p.get_gid(): p for ax in figure.axes for p in ax.patches if p.get_gid()}  # type: ignore[misc]


def _gids(figure: Figure, prefix: str) -> set[str]:
    return {gid for gid in _patches(figure) if gid.startswith(prefix)}


def _texts(figure: Figure) -> list[str]:
    texts = [t.get_text() for ax in figure.axes for t in ax.texts]
    texts += [ax.get_title(loc) for ax in figure.axes for loc in ("left", "center")]
    texts += [t.get_text() for legend in figure.legends for t in legend.get_texts()]
    return texts


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _segment(partition: int, base: int, last: int, *, active: bool, cleaned: bool) -> Segment:
    return Segment("user", partition, base, base, last, last - base + 1, 0, 1, 100, active, cleaned, None,
                   Path(f"{base:020d}.log"))


def test_plot_partitions_draws_one_box_per_record_and_renders_headless() -> None:
    figure = plot_partitions(_history(), title="the log")

    assert isinstance(figure, Figure)
    assert _gids(figure, "record ") == {
        "record 0:0", "record 0:1", "record 0:2", "record 0:3", "record 1:0", "record 2:0", "record 2:1",
    }
    assert _png(figure).startswith(b"\x89PNG")
    assert "the log" in _texts(figure)
    labels = [label.get_text() for label in figure.axes[0].get_yticklabels()]
    assert labels == ["partition 0", "partition 1", "partition 2"]


def test_superseded_records_are_grey_and_linked_to_the_record_that_supersedes_them() -> None:
    figure = plot_partitions(_history())
    patches = _patches(figure)

    assert _gids(figure, "supersedes ") == {"supersedes 0:0->3", "supersedes 2:0->1"}
    grey = matplotlib.colors.to_rgba(STATUS_COLOURS["superseded"][0])
    assert patches["record 0:0"].get_facecolor() == grey
    assert patches["record 2:0"].get_facecolor() == grey
    assert patches["record 2:1"].get_facecolor() != grey


def test_statuses_are_symbols_and_hatching_too_not_colour_alone() -> None:
    figure = plot_partitions(_history())
    patches = _patches(figure)
    texts = _texts(figure)

    assert patches["record 0:3"].get_hatch() == "////"  # the tombstone
    assert all(patches[f"record {p}"].get_hatch() is None for p in ("0:0", "0:1", "1:0", "2:1"))
    assert texts.count("●") == 4
    assert texts.count("○") == 2
    assert texts.count("✝") == 1
    assert "null" in texts  # the tombstone's value
    assert {"alan", "grace", "edsger", "barbara", "ada"} <= set(texts)  # keys, up to the @
    legend = set(texts)
    assert {"● live", "○ superseded", "✝ tombstone (null value)"} <= legend


def test_removed_records_are_drawn_dashed_and_struck_out_at_their_offsets() -> None:
    result = _compaction()
    figure = plot_partitions(result.after, removed=result.removed)
    patches = _patches(figure)

    assert _gids(figure, "removed ") == {"removed 0:0", "removed 2:0"}
    lessons = [r for r in result.after if not r.is_marker]
    assert _gids(figure, "record ") == {f"record {r.partition}:{r.offset}" for r in lessons}
    assert any("3 roll markers of the kit hidden" in t for t in _texts(figure))
    removed, kept = patches["removed 0:0"], patches["record 0:1"]
    assert removed.get_linestyle() != kept.get_linestyle()
    assert removed.get_facecolor() == matplotlib.colors.to_rgba("white")
    assert _texts(figure).count("removed") == 2
    assert "removed by compaction" in _texts(figure)
    assert not _gids(figure, "supersedes ")  # nothing left is superseded


def test_segments_are_drawn_with_the_active_one_marked() -> None:
    segments = [
        _segment(0, 0, 1, active=False, cleaned=True), _segment(0, 2, 3, active=False, cleaned=False),
        _segment(0, 4, 4, active=True, cleaned=False), _segment(1, 0, 0, active=True, cleaned=False),
        _segment(2, 0, 1, active=True, cleaned=False),
    ]
    figure = plot_partitions(_history(), segments=segments)

    assert _gids(figure, "segment ") == {
        "segment 0:0 cleaned", "segment 0:2 dirty", "segment 0:4 active", "segment 1:0 active", "segment 2:0 active",
    }
    texts = _texts(figure)
    assert texts.count("active") == 3
    assert "cleaned" in texts
    assert "dirty" in texts
    assert {"cleaned segment", "dirty segment", "active segment"} <= set(texts)


def test_compaction_story_draws_before_above_after_on_one_offset_axis() -> None:
    result = _compaction()

    figure = plot_compaction_story(result)

    top, bottom = figure.axes
    texts = _texts(figure)
    assert "before: 7 records" in texts
    assert "after: 5 records" in texts
    assert any("(3 roll markers of the kit hidden)" in t for t in texts)
    assert top.get_shared_x_axes().joined(top, bottom)
    assert top.get_xlim() == bottom.get_xlim()
    assert top.get_position().y0 > bottom.get_position().y0  # before above
    top_gids = {p.get_gid() for p in top.patches}
    bottom_gids = {p.get_gid() for p in bottom.patches}
    assert {"supersedes 0:0->3", "supersedes 2:0->1", "record 0:0"} <= top_gids
    assert {"removed 0:0", "removed 2:0", "segment 0:4 active", "segment 0:0 cleaned"} <= bottom_gids
    assert "record 0:4" not in bottom_gids  # the roll marker: the kit's, not the lesson's
    assert "roll" not in texts
    _png(figure)


def test_a_long_partition_wraps_onto_lines_and_a_longer_one_is_cut_with_a_count() -> None:
    thirty = [_record(0, o, f"user{o % 7}@example.com", f"User {o}") for o in range(30)]
    wrapped = plot_partitions(thirty)
    labels = [label.get_text() for label in wrapped.axes[0].get_yticklabels()]
    assert labels == ["partition 0\noffsets 0–14", "offsets 15–29"]
    assert len(_gids(wrapped, "record ")) == 30
    assert wrapped.get_figwidth() < 14  # readable in a notebook cell, not a strip to scroll

    hundred = [_record(0, o, f"user{o % 7}@example.com", f"User {o}") for o in range(100)]
    capped = plot_partitions(hundred)
    assert len(_gids(capped, "record ")) == MAX_OFFSETS
    assert f"… {100 - MAX_OFFSETS} more\n(to offset 99)" in _texts(capped)
    # Superseded by a record on a later line or not drawn: a stub with the offset, still named.
    assert "supersedes 0:31->38" in _gids(capped, "supersedes ")


def test_many_partitions_are_capped_and_the_title_says_so() -> None:
    records = [_record(p, 0, f"u{p}@example.com", "U") for p in range(20)]

    figure = plot_partitions(records, max_partitions=4)

    assert len(_gids(figure, "record ")) == 4
    assert any("12 more" not in t and "16 more" in t for t in _texts(figure))


def test_plot_overview_draws_the_one_way_flow() -> None:
    figure = plot_overview()
    gids = _gids(figure, "")

    nodes = ["HTTP client", "HTTP endpoint", "producer", "topic", "consumer", "store", "HTTP response"]
    assert {f"node {n}" for n in nodes} <= gids
    assert {f"flow {i}" for i in range(1, 7)} <= gids
    texts = " ".join(_texts(figure))
    assert "UserService" in texts
    assert "partition 0" in texts
    assert "partition 2" in texts


def test_plot_partition_segments_shows_closed_active_clean_dirty_and_the_checkpoint() -> None:
    figure = plot_partition_segments()
    ax = figure.axes[0]

    assert {p.get_gid() for p in ax.patches} >= {"segment cleaned", "segment dirty", "segment active"}
    assert any(line.get_gid() == "checkpoint" for line in ax.lines)
    texts = " ".join(_texts(figure))
    assert "closed · cleaned" in texts
    assert "closed · dirty" in texts
    assert "active" in texts
    assert "cleaner checkpoint" in texts


def test_plot_group_vs_assign_contrasts_replicated_and_partitioned() -> None:
    figure = plot_group_vs_assign()
    left, right = figure.axes
    left_gids = {p.get_gid() for p in left.patches}
    right_gids = {p.get_gid() for p in right.patches}

    assert {f"reads {p}->{i}" for p in range(3) for i in "AB"} <= left_gids  # every instance, every partition
    assert {g for g in right_gids if g and g.startswith("reads ")} == {"reads 0->A", "reads 1->A", "reads 2->B"}
    owner = {0: "A", 1: "A", 2: "B"}[partition_for("ada@example.com", 3)]
    assert {g for g in right_gids if g and g.startswith("request->")} == {f"request->{owner}"}
    assert {"request->A", "request->B"} <= left_gids


@pytest.mark.parametrize("draw", [plot_overview, plot_partition_segments, plot_group_vs_assign])
def test_system_diagrams_are_deterministic(draw: object) -> None:
    assert callable(draw)
    first, second = draw(), draw()
    assert isinstance(first, Figure)
    assert _png(first) == _png(second)
    assert "object at 0x" not in repr(first)


def test_log_diagrams_are_deterministic() -> None:
    result = _compaction()
    assert _png(plot_compaction_story(result)) == _png(plot_compaction_story(result))
    assert "object at 0x" not in repr(plot_partitions(_history()))
