"""Diagrams of the system: where a write goes, what a partition is on disk, who reads which partition.

Static drawings, the same every time (no broker, no randomness), in the words of the kit:

- :func:`plot_overview`: an HTTP client's write through the :class:`~kafka_crud.UserService`:
  HTTP endpoint -> producer -> the topic's partitions -> consumer -> store -> HTTP response.
  Data flows one way: the service answers from its store, once the store has the record.
- :func:`plot_partition_segments`: one partition's log as segments: closed and cleaned below
  the cleaner checkpoint, closed and dirty above it, and the active segment appends go to.
- :func:`plot_group_vs_assign`: replicated (every instance assigns every partition) beside
  partitioned (a consumer group splits the partitions; requests are routed to the owner).

Also exported by :mod:`kafka_crud.diagrams`. Needs matplotlib (``pip install kafka-crud[views]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .partitioning import partition_for
from .views import MARK_COLOURS, STATUS_COLOURS, STATUS_SYMBOLS

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

__all__ = ["plot_group_vs_assign", "plot_overview", "plot_partition_segments"]

_INK = "#333333"
_SERVICE = ("#f2f2f2", "#666666")
_NODE = ("#ffffff", "#333333")
_SEGMENT_COLOURS = {"cleaned": "#cdeee3", "dirty": "#f3dcea", "active": "#faf3b5"}
_OWNERS = {"A": "#009E73", "B": "#CC79A7"}  # Okabe–Ito bluish green and reddish purple


def _canvas(width: float, height: float, panels: int = 1) -> tuple[Figure, list[Axes]]:
    """A figure whose axes are in inches: (0, 0) bottom left, no ticks."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * panels, height), layout="constrained")
    axes = list(figure.subplots(1, panels, squeeze=False)[0])
    for ax in axes:
        ax.set_xlim(0, width)
        ax.set_ylim(0, height)
        ax.set_aspect("equal")
        ax.axis("off")
    return figure, axes


def _box(
    ax: Axes, x: float, y: float, w: float, h: float, text: str, *, colours: tuple[str, str] = _NODE,
    size: float = 9.5, bold: bool = True, dashed: bool = False, gid: str | None = None, valign: str = "center",
) -> None:
    from matplotlib.patches import FancyBboxPatch

    face, edge = colours
    ax.add_patch(FancyBboxPatch(
        (x, y), w, h, boxstyle="round,pad=0,rounding_size=0.08", facecolor=face, edgecolor=edge,
        linewidth=1.3, linestyle=(0, (4, 2)) if dashed else "-", gid=gid, zorder=1 if dashed else 2,
    ))
    ty = y + h / 2 if valign == "center" else y + h - 0.12
    ax.text(x + w / 2, ty, text, ha="center", va=valign, fontsize=size, color=_INK,
            fontweight="bold" if bold else "normal", zorder=3, linespacing=1.3)


def _arrow(
    ax: Axes, start: tuple[float, float], end: tuple[float, float], label: str = "", *,
    colour: str = _INK, dashed: bool = False, rad: float = 0.0, offset: tuple[float, float] = (0.0, 0.14),
    gid: str | None = None,
) -> None:
    from matplotlib.patches import FancyArrowPatch

    ax.add_patch(FancyArrowPatch(
        start, end, arrowstyle="-|>", mutation_scale=13, linewidth=1.4, color=colour, shrinkA=0, shrinkB=0,
        linestyle=(0, (4, 3)) if dashed else "-", connectionstyle=f"arc3,rad={rad}", gid=gid, zorder=4,
    ))
    if label:
        mx, my = (start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1]
        ax.text(mx, my, label, ha="center", va="bottom" if offset[1] >= 0 else "top", fontsize=8, color=_INK,
                zorder=5, linespacing=1.2, bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.0})


def _cells(ax: Axes, x: float, y: float, kinds: Sequence[str], *, size: float = 0.34, first: int = 0) -> None:
    """A strip of records: one small square per offset, its status a colour and a symbol; "gap" is empty."""
    from matplotlib.patches import Rectangle

    for i, kind in enumerate(kinds):
        cx = x + i * size
        if kind in ("gap", "next"):  # no record: a removed offset, or the next one to be written
            gap = kind == "gap"
            ax.add_patch(Rectangle((cx, y), size * 0.9, size, facecolor="white",
                                   edgecolor="#8c8c8c" if gap else "#b5b5b5", linewidth=0.9,
                                   linestyle=(0, (3, 2)) if gap else (0, (1, 1.5)), zorder=2))
            continue
        face = STATUS_COLOURS[kind][0]
        cell = Rectangle((cx, y), size * 0.9, size, facecolor=face, edgecolor=MARK_COLOURS[kind],
                         linewidth=1.0, hatch="////" if kind == "tombstone" else None, zorder=2)
        if kind == "tombstone" and hasattr(cell, "set_hatchcolor"):  # matplotlib 3.10+
            cell.set_hatchcolor("#eeb08a")
        ax.add_patch(cell)
        ax.text(cx + size * 0.45, y + size * 0.5, STATUS_SYMBOLS[kind], ha="center", va="center", fontsize=7,
                color=STATUS_COLOURS[kind][1], zorder=3)
    if first >= 0:
        ax.text(x, y - 0.06, str(first), ha="left", va="top", fontsize=6.5, color="#666666")


def _status_key(ax: Axes, x: float, y: float, dashed: str) -> None:
    text = "   ".join(f"{STATUS_SYMBOLS[s]} {s}" for s in ("live", "superseded", "tombstone"))
    ax.text(x, y, f"{text}   {dashed}", fontsize=8, color=_INK, ha="left", va="center")


def plot_overview() -> Figure:
    """A write's one-way trip: HTTP client -> HTTP endpoint -> producer -> partitions -> consumer -> store -> response.

    The :class:`~kafka_crud.UserService` holds the HTTP endpoint, the producer, the consumer and
    the store. A ``PUT`` becomes a record (key: the email; value: the user as JSON; a ``DELETE``
    a tombstone) appended to the partition its key hashes to. The consumer reads every
    partition in offset order and applies each record to the store; the HTTP response is sent
    once the store holds the record, and every ``GET`` is answered from the store.
    """
    figure, (ax,) = _canvas(12.4, 4.6)
    ax.text(0.1, 4.5, "A write's trip through the kit: data flows one way", fontsize=12, fontweight="bold",
            va="top", color=_INK)
    _box(ax, 1.95, 0.35, 4.6, 3.55, "UserService", colours=_SERVICE, dashed=True, size=9, valign="top",
         gid="service")
    nodes = {  # name: (x, y, label)
        "HTTP client": (0.1, 2.55, "HTTP client"), "HTTP endpoint": (2.25, 2.55, "HTTP endpoint"),
        "producer": (4.75, 2.55, "producer"), "consumer": (4.75, 0.65, "consumer"),
        "store": (2.25, 0.65, "store\nemail → user"), "HTTP response": (0.1, 0.65, "HTTP response"),
    }
    for name, (x, y, label) in nodes.items():
        _box(ax, x, y, 1.4 if name.startswith("HTTP ") and name != "HTTP endpoint" else 1.5, 0.8, label,
             gid=f"node {name}")
    ax.text(5.5, 2.42, "PUT: key = email, value = JSON\nDELETE: a tombstone ✝ (null)", ha="center", va="top",
            fontsize=7.5, color="#555555")
    ax.text(3.0, 1.58, "every GET is answered here", ha="center", va="bottom", fontsize=7.5, color="#555555")
    # The topic: three partitions, each a log of records at offsets 0, 1, 2, ...
    _box(ax, 7.9, 0.35, 4.4, 3.55, "topic 'user' (compacted)", colours=("#fbfbfb", "#333333"), size=9,
         valign="top", gid="node topic")
    logs = {0: ["live", "superseded", "live", "tombstone", "live"], 1: ["superseded", "live", "live"],
            2: ["live", "superseded", "superseded", "live", "live", "live"]}
    for partition, kinds in logs.items():
        y = 2.75 - partition * 0.85
        ax.text(8.05, y + 0.17, f"partition {partition}", fontsize=8, va="center", color=_INK)
        _cells(ax, 9.05, y, [*kinds, "next"], first=0)
        ax.text(9.05 + (len(kinds) + 1) * 0.34 + 0.05, y + 0.17, "← end offset", fontsize=7, va="center",
                color="#666666")
    _status_key(ax, 8.05, 0.55, "┊ next offset")
    _arrow(ax, (1.5, 2.95), (2.25, 2.95), "PUT /user\n{email, name}", gid="flow 1")
    _arrow(ax, (3.75, 2.95), (4.75, 2.95), "record", gid="flow 2")
    _arrow(ax, (6.25, 2.95), (7.9, 2.95), "append to partition\nmurmur2(email) mod 3", gid="flow 3")
    _arrow(ax, (7.9, 1.05), (6.25, 1.05), "poll: each partition\nin offset order", offset=(0.0, -0.14),
           gid="flow 4")
    _arrow(ax, (4.75, 1.05), (3.75, 1.05), "apply", gid="flow 5")
    _arrow(ax, (2.25, 1.05), (1.5, 1.05), "200 + ETag,\nonce stored", offset=(0.0, -0.14), gid="flow 6")
    return figure


def plot_partition_segments() -> Figure:
    """One partition on disk: segment files by base offset, the cleaner checkpoint, the active segment.

    Closed segments below the checkpoint are **cleaned**: one record per key is left, at its
    offset, so a segment may start later than its base offset. Closed segments above it are
    **dirty**: superseded records wait for the next cleaner pass. The **active** segment, where
    appends go, is never cleaned; it closes when it rolls (``segment.ms`` or ``segment.bytes``).
    """
    figure, (ax,) = _canvas(10.6, 4.3)
    ax.text(0.1, 4.2, "One partition on disk: segments, and what the log cleaner does with them",
            fontsize=12, fontweight="bold", va="top", color=_INK)
    ax.text(0.1, 3.85, "partition 0 of a compacted topic: a folder user-0/ of segment files, each named "
            "after its base offset", fontsize=8.5, va="top", color="#444444")
    size = 0.34
    segments = [  # (state, base offset, records: one kind per offset)
        ("cleaned", 0, ["gap", "gap", "live", "tombstone", "live"]),
        ("cleaned", 5, ["live", "gap", "live", "gap", "live"]),
        ("dirty", 10, ["superseded", "live", "superseded", "superseded", "live"]),
        ("dirty", 15, ["live", "superseded", "tombstone", "superseded", "live"]),
        ("active", 20, ["live", "superseded", "live", "next", "next"]),
    ]
    x, y = 0.3, 2.0
    checkpoint_x = 0.0
    for state, base, kinds in segments:
        width = len(kinds) * size + 0.16
        closed = "active: appends go here" if state == "active" else f"closed · {state}"
        ax.add_patch(_segment_patch(x, y - 0.16, width, size + 0.32, state))
        ax.text(x + width / 2, y + size + 0.26, f"{base:020d}.log", ha="center", va="bottom", fontsize=6.5,
                family="monospace", color=_INK)
        ax.text(x + width / 2, y + size + 0.5, f"base offset {base}", ha="center", va="bottom", fontsize=8,
                color=_INK)
        ax.text(x + width / 2, y - 0.28, closed, ha="center", va="top", fontsize=8.5, color=_INK,
                fontweight="bold" if state == "active" else "normal")
        _cells(ax, x + 0.1, y, kinds, size=size, first=-1)
        if state == "dirty" and not checkpoint_x:
            checkpoint_x = x - 0.08
        x += width + 0.16
    ax.plot([checkpoint_x] * 2, [y - 0.7, y + size + 0.95], color="#000000", linewidth=2.0, gid="checkpoint")
    ax.text(checkpoint_x, y + size + 1.0, "cleaner checkpoint: 10 (in cleaner-offset-checkpoint)", ha="center",
            va="bottom", fontsize=8, color=_INK)
    notes = [
        (0.3, "cleaned: the latest record of each key is left,\nat its offset. The first segment keeps base\n"
              "offset 0; its first record is at 2."),
        (checkpoint_x + 0.15, "dirty: written since the last pass; superseded\nrecords wait here for the "
                              "next cleaner pass."),
        (x - 2.3, "active: the cleaner never touches it.\nIt closes when it rolls\n(segment.ms, segment.bytes)."),
    ]
    for nx, text in notes:
        ax.text(nx, y - 0.7, text, ha="left", va="top", fontsize=8, color="#444444", linespacing=1.3)
    _status_key(ax, 0.3, 0.35, "┆ gap: an offset the cleaner removed   ┊ next offset")
    return figure


def _segment_patch(x: float, y: float, w: float, h: float, state: str) -> Patch:
    from matplotlib.patches import FancyBboxPatch

    return FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0,rounding_size=0.06",
                          facecolor=_SEGMENT_COLOURS[state], edgecolor="#555555", linewidth=1.1,
                          gid=f"segment {state}", zorder=1)


def _group_panel(ax: Axes, *, partitioned: bool) -> None:
    owners = {0: "A", 1: "A", 2: "B"}
    email = "ada@example.com"
    target = partition_for(email, 3)
    title = ("partitioned: a consumer group splits the partitions" if partitioned
             else "replicated: every instance assigns every partition")
    subtitle = ("GroupStoreConsumer: members of one consumer group (like a KTable)" if partitioned
                else "StoreConsumer: assign() every partition (like a GlobalKTable)")
    ax.text(0.1, 5.3, title, fontsize=11, fontweight="bold", va="top", color=_INK)
    ax.text(0.1, 4.95, subtitle, fontsize=8.5, va="top", color="#444444")
    xs = {0: 0.5, 1: 2.3, 2: 4.1}
    for partition, px in xs.items():
        _box(ax, px, 3.8, 1.4, 0.6, f"partition {partition}", colours=("#fbfbfb", "#333333"), size=9,
             gid=f"partition {partition}")
    centres = {"A": 1.6, "B": 4.2}
    for name, cx in centres.items():
        mine = [p for p, o in owners.items() if o == name]
        owned = f"partition{'s' if len(mine) > 1 else ''} {', '.join(map(str, mine))}"
        holds = (f"owns {owned}\nstore: their users" if partitioned
                 else "assigns 0, 1, 2\nstore: every user")
        _box(ax, cx - 1.0, 2.0, 2.0, 0.95, f"instance {name}\n", colours=("#ffffff", _OWNERS[name]), size=9.5,
             gid=f"instance {name}")
        ax.text(cx, 2.25, holds, ha="center", va="center", fontsize=8, color=_INK, zorder=3)
        for partition, px in xs.items():
            if partitioned and owners[partition] != name:
                continue
            _arrow(ax, (px + 0.7, 3.8), (cx + (partition - 1) * 0.3, 2.95), colour=_OWNERS[name],
                   gid=f"reads {partition}->{name}")
    router = (f"route by key: {email} → partition {target}\n→ its owner, instance {owners[target]}"
              if partitioned else f"GET {email}: any instance can answer")
    _box(ax, 0.6, 0.55, 4.6, 0.75, router, size=8.5, bold=False, gid="router")
    if not partitioned:
        ax.text(2.9, 1.65, "either one", ha="center", va="center", fontsize=8, color="#444444")
    for name, cx in centres.items():
        if partitioned and name != owners[target]:
            continue
        _arrow(ax, (cx, 1.3), (cx, 2.0), "", colour=_INK, dashed=not partitioned and name == "B",
               gid=f"request->{name}")
    caption = ("Each instance holds a share: add instances to hold more users.\nA rebalance moves "
               "partitions, and their users, between instances." if partitioned else
               "Each instance holds every user: any one can answer,\nbut each reads (and replays) the whole topic.")
    ax.text(0.1, 0.35, caption, fontsize=8, color="#444444", va="top", linespacing=1.3)


def plot_group_vs_assign() -> Figure:
    """Two ways to run several service instances on one topic, side by side.

    Replicated (``assign``): every instance reads every partition and holds every user; a
    request may go to any of them. Partitioned (a consumer group): the group's members split the
    partitions, each holds the users of its own; a request is routed to the owner of the
    partition its key hashes to (:func:`~kafka_crud.partition_for`).
    """
    figure, (left, right) = _canvas(6.0, 5.4, panels=2)
    _group_panel(left, partitioned=False)
    _group_panel(right, partitioned=True)
    return figure
