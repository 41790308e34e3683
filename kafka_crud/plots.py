"""Plots of the log: one mark per record, by partition and offset, shaped and coloured by status.

The records go through :func:`kafka_crud.views.records_frame` (the kit's roll markers hidden);
matplotlib is imported when a plot is drawn (``pip install kafka-crud[views]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .records import LogRecord
from .views import MARK_COLOURS, MARKER_SHAPES, hidden_markers, records_frame

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_compaction", "plot_log"]


def _as_frame(log: Sequence[LogRecord] | pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    return log if isinstance(log, pd.DataFrame) else records_frame(log, timestamps=False)


def _draw(ax: Axes, frame: pd.DataFrame, title: str) -> None:
    from matplotlib.ticker import MaxNLocator

    for status in ("superseded", "live", "tombstone"):
        rows = frame[frame["status"] == status]
        colour = MARK_COLOURS[status]
        ax.scatter(
            rows["offset"], rows["partition"], s=90, marker=MARKER_SHAPES[status], linewidths=1.5,
            facecolors="none" if status == "superseded" else colour, edgecolors=colour,
            label=f"{status} ({len(rows)})",
        )
    partitions = sorted(set(frame["partition"])) or [0]
    ax.set_yticks(partitions)
    ax.set_ylim(min(partitions) - 0.6, max(partitions) + 0.6)
    ax.set_ylabel("partition")
    ax.set_title(title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # offsets are whole numbers: no tick at 0.5
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)


def plot_log(
    log: Sequence[LogRecord] | pd.DataFrame, *, title: str | None = None, ax: Axes | None = None
) -> Figure:
    """Records per partition by offset, one mark per record: its shape and colour say its status
    (■ live, blue; ○ superseded, grey; ✖ tombstone, orange).

    Gaps in a row are offsets compaction removed. Draws on ``ax`` when given, else on a new
    figure; returns the figure (a notebook cell ending with it shows it once).
    """
    from matplotlib.figure import Figure

    frame = _as_frame(log)
    if ax is None:
        figure = Figure(figsize=(9, 1.2 + 0.5 * max(frame["partition"].nunique(), 1)), layout="constrained")
        ax = figure.subplots()
    hidden = hidden_markers(frame)
    _draw(ax, frame, title or f"{len(frame)} records" + (f" ({hidden} roll markers hidden)" if hidden else ""))
    ax.set_xlabel("offset")
    root = ax.figure
    while not isinstance(root, Figure):  # a subfigure: its parent, up to the figure
        root = root.figure
    return root


def _positions(frame: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(frame["partition"], frame["offset"], strict=True))


def plot_compaction(
    before: Sequence[LogRecord] | pd.DataFrame, after: Sequence[LogRecord] | pd.DataFrame
) -> Figure:
    """The log before and after compaction, one above the other on the same offset axis.

    Superseded records vanish; survivors stay at their offsets, leaving gaps.
    """
    from matplotlib.figure import Figure

    first, second = _as_frame(before), _as_frame(after)
    rows = max(first["partition"].nunique(), second["partition"].nunique(), 1)
    figure = Figure(figsize=(9, 2.4 + 1.0 * rows), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True)
    _draw(top, first, f"before: {len(first)} records")
    removed = len(_positions(first) - _positions(second))
    _draw(bottom, second, f"after: {len(second)} records ({removed} removed; survivors keep their offsets)")
    bottom.set_xlabel("offset")
    return figure
