"""The log made visible: DataFrames, a colour-coded table and plots of what is in a topic.

Kafka UIs show messages and count them as the high minus the low watermark. On a compacted
topic that number is neither the records there (compaction leaves gaps) nor the keys that are
live; these views put the three side by side, say which record supersedes which, and show
the log before and after the cleaner. The words (offset, end offset, live, superseded,
tombstone) are those of :mod:`kafka_crud.records`.

Views only draw: they take records, watermarks or group offsets that a
:class:`~kafka_crud.Kafka` connection read (``records_frame(kafka.read_log(topic))``) and never
talk to Kafka themselves. Columns come in a fixed order, and time columns can be left out
(``timestamps=False``) for output that is the same from run to run. For a topic too large to
hold, :func:`~kafka_crud.scan.log_frame` (a range of it) and
:func:`~kafka_crud.summary.summary_frame` (its counts) read it themselves, without its records.

pandas is imported when a view is built, not with the package: ``import kafka_crud`` (and
so the CLI and the server) stays quick. matplotlib is needed only for the plots
(``pip install kafka-crud[views]``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from .records import LogRecord, classify
from .styled import StyledTable
from .values import shown

if TYPE_CHECKING:
    from .connection import GroupOffset, Watermarks
    from .segments import Segment

if TYPE_CHECKING:
    import pandas as pd

    from .store import StoredUser

__all__ = [
    "COMPARE_COLUMNS",
    "GROUP_COLUMNS",
    "LOG_COLUMNS",
    "SEGMENT_COLUMNS",
    "MARK_COLOURS",
    "STATUS_COLOURS",
    "STATUS_LEGEND",
    "STATUS_SYMBOLS",
    "WATERMARK_COLUMNS",
    "compare_frame",
    "groups_frame",
    "hidden_markers",
    "records_frame",
    "segments_frame",
    "status_label",
    "style_log",
    "users_frame",
    "watermarks_frame",
]

#: Columns of :func:`log_frame`; ``timestamp`` is last so that it is easy to drop.
LOG_COLUMNS = ("partition", "offset", "key", "value", "kind", "status", "superseded_by", "live", "timestamp")
#: Columns of :func:`compare_frame`.
COMPARE_COLUMNS = ("partition", "offset", "key", "value", "kind", "status", "outcome", "timestamp")
#: Columns of :func:`watermarks_frame`.
WATERMARK_COLUMNS = (
    "partition", "low", "high", "high_minus_low", "records", "live_keys", "superseded", "tombstones", "markers",
)
#: Columns of :func:`segments_frame`.
SEGMENT_COLUMNS = (
    "partition", "segment", "base_offset", "first_offset", "last_offset", "records", "tombstones",
    "batches", "size_bytes", "active", "cleaned", "stamped", "delete_horizon",
)
#: Columns of :func:`groups_frame`.
GROUP_COLUMNS = ("group", "topic", "partition", "committed", "end_offset", "lag")

#: Background and text colour per record status, in the table (Okabe–Ito hues, safe for
#: red-green colour blindness; the status is also a word and a symbol, never a colour alone).
STATUS_COLOURS: dict[str, tuple[str, str]] = {
    "live": ("#d4e6f4", "#00466e"),  # blue
    "superseded": ("#ececec", "#595959"),  # grey
    "tombstone": ("#f9dcc8", "#8a3b00"),  # vermillion
}
#: The symbol beside each status word, in tables and plots.
STATUS_SYMBOLS: dict[str, str] = {"live": "●", "superseded": "○", "tombstone": "✝"}
#: Mark and outline colour per status in the plots (Okabe–Ito blue, grey, vermillion).
MARK_COLOURS: dict[str, str] = {"live": "#0072B2", "superseded": "#8c8c8c", "tombstone": "#D55E00"}
MARKER_SHAPES = {"live": "s", "superseded": "o", "tombstone": "X"}  # the shape says it too
#: What the colours and symbols mean, as the tables' caption says it.
STATUS_LEGEND = "● live: blue, ○ superseded: grey, ✝ tombstone: orange"


def status_label(status: str) -> str:
    """A status as tables and plots write it: its symbol and its word (``● live``)."""
    symbol = STATUS_SYMBOLS.get(status)
    return f"{symbol} {status}" if symbol else status


def _text(raw: bytes | None) -> str | None:
    # Text as itself; other bytes as what they are and a hex preview (kafka_crud.values), never mojibake.
    return shown(raw)


def _timestamps(millis: Iterable[int | None]) -> pd.Series:
    import pandas as pd

    values = pd.array([m if m is not None and m >= 0 else None for m in millis], dtype="Int64")
    return pd.to_datetime(pd.Series(values), unit="ms", utc=True)


def _object(values: Iterable[str | None]) -> pd.Series:
    import pandas as pd

    # object, not pandas' string dtype: a tombstone's value shows as None, an empty value as "".
    return pd.Series(list(values), dtype=object)


def _hide_markers(records: Iterable[LogRecord], markers: bool) -> tuple[list[LogRecord], int]:
    """The records without the kit's roll markers (unless ``markers``), and how many were hidden."""
    records = list(records)
    if markers:
        return records, 0
    shown = [r for r in records if not r.is_marker]
    return shown, len(records) - len(shown)


def hidden_markers(frame: pd.DataFrame) -> int:
    """How many roll markers a view left out of ``frame`` (see :mod:`kafka_crud.rolling`)."""
    return int(frame.attrs.get("hidden_markers", 0))


def records_frame(records: Iterable[LogRecord], *, timestamps: bool = True, markers: bool = False) -> pd.DataFrame:
    """The records as a DataFrame with the columns of :data:`LOG_COLUMNS`, in the order given.

    The kit's roll markers are left out unless ``markers``; :func:`hidden_markers` says how many.

    ``key`` and ``value`` are decoded as UTF-8 text (bytes that are not text read as what they
    are, ``binary, 4 bytes: ff fe 00 01``: :mod:`kafka_crud.values`); a tombstone's value is None. ``kind`` is
    put, tombstone or empty value; ``status`` is live, superseded or tombstone, with
    ``superseded_by`` the offset of the later record of the same key (the one that makes it
    removable). ``live`` is True for the current value of its key. ``timestamp`` is the
    producer's time, in UTC; ``timestamps=False`` leaves it out.
    """
    import pandas as pd

    records, hidden = _hide_markers(records, markers)
    statuses = classify(records)
    frame = pd.DataFrame({
        "partition": pd.Series([r.partition for r in records], dtype="int64"),
        "offset": pd.Series([r.offset for r in records], dtype="int64"),
        "key": _object(_text(r.key) for r in records),
        "value": _object(_text(r.value) for r in records),
        "kind": _object(r.kind for r in records),
        "status": _object(status for status, _ in statuses),
        "superseded_by": pd.array([newer for _, newer in statuses], dtype="Int64"),
        "live": pd.Series([status == "live" for status, _ in statuses], dtype=bool),
        "timestamp": _timestamps(r.timestamp for r in records),
    }, columns=list(LOG_COLUMNS))
    frame = frame if timestamps else frame.drop(columns=["timestamp"])
    frame.attrs["hidden_markers"] = hidden
    return frame


def compare_frame(
    before: Iterable[LogRecord], after: Iterable[LogRecord], *, timestamps: bool = False, markers: bool = False,
) -> pd.DataFrame:
    """Two reads of one log side by side: every record of either, by partition and offset.

    The kit's roll markers are left out unless ``markers``; :func:`hidden_markers` says how many.

    ``status`` is the record's status in ``before`` (in ``after`` for a new record).
    ``outcome`` is ``kept`` (still there, at the same offset: compaction never renumbers),
    ``removed`` (gone from ``after``) or ``new`` (written in between).
    """
    import pandas as pd

    raw = [*before, *after] if not markers else []
    before, _ = _hide_markers(before, markers)
    after, _ = _hide_markers(after, markers)
    in_after = {(r.partition, r.offset) for r in after}
    in_before = {(r.partition, r.offset) for r in before}
    rows: list[tuple[LogRecord, str, str]] = []
    for record, (status, _) in zip(before, classify(before), strict=True):
        rows.append((record, status, "kept" if (record.partition, record.offset) in in_after else "removed"))
    for record, (status, _) in zip(after, classify(after), strict=True):
        if (record.partition, record.offset) not in in_before:
            rows.append((record, status, "new"))
    rows.sort(key=lambda row: (row[0].partition, row[0].offset))
    frame = pd.DataFrame({
        "partition": pd.Series([r.partition for r, _, _ in rows], dtype="int64"),
        "offset": pd.Series([r.offset for r, _, _ in rows], dtype="int64"),
        "key": _object(_text(r.key) for r, _, _ in rows),
        "value": _object(_text(r.value) for r, _, _ in rows),
        "kind": _object(r.kind for r, _, _ in rows),
        "status": _object(status for _, status, _ in rows),
        "outcome": _object(outcome for _, _, outcome in rows),
        "timestamp": _timestamps(r.timestamp for r, _, _ in rows),
    }, columns=list(COMPARE_COLUMNS))
    frame = frame if timestamps else frame.drop(columns=["timestamp"])
    frame.attrs["hidden_markers"] = len({(r.partition, r.offset) for r in raw if r.is_marker})
    return frame


def watermarks_frame(marks: Mapping[int, Watermarks], records: Iterable[LogRecord]) -> pd.DataFrame:
    """Per partition: the watermarks Kafka UIs count with, beside what is really there.

    ``marks`` come from :meth:`Kafka.watermarks <kafka_crud.Kafka.watermarks>`, ``records``
    from :meth:`Kafka.read_log <kafka_crud.Kafka.read_log>` read *after* them (records at or
    beyond a partition's ``high`` are left out, so the two agree).

    ``low`` is the log start offset (compaction does not move it: it stays 0 even when the
    first records are gone), ``high`` the end offset, ``high_minus_low`` what a UI shows as
    "messages". ``records`` are the records actually in the log below ``high``; of them
    ``live_keys`` are the current values of their keys (exact: the number of keys a reader
    rebuilding the table ends up with, an empty value included), the others are ``superseded``,
    latest-of-their-key ``tombstones``, or the kit's own roll ``markers``
    (:mod:`kafka_crud.rolling`): ``records`` = ``live_keys`` + ``superseded`` + ``tombstones``
    + ``markers``. :func:`~kafka_crud.summary.summary_frame` counts the same without the records.
    """
    import pandas as pd

    below = [r for r in records if r.partition in marks and r.offset < marks[r.partition].high]
    counts = {p: {"records": 0, "live": 0, "superseded": 0, "tombstone": 0, "markers": 0} for p in marks}
    for record, (status, _) in zip(below, classify(below), strict=True):
        counts[record.partition]["records"] += 1
        counts[record.partition]["markers" if record.is_marker else status] += 1
    rows = [
        {
            "partition": p, "low": low, "high": high, "high_minus_low": high - low,
            "records": counts[p]["records"], "live_keys": counts[p]["live"],
            "superseded": counts[p]["superseded"], "tombstones": counts[p]["tombstone"],
            "markers": counts[p]["markers"],
        }
        for p, (low, high) in marks.items()
    ]
    return pd.DataFrame(rows, columns=list(WATERMARK_COLUMNS)).astype("int64")


def groups_frame(offsets: Iterable[GroupOffset]) -> pd.DataFrame:
    """Consumer groups' committed offsets and lag, from :meth:`Kafka.group_offsets <kafka_crud.Kafka.group_offsets>`.

    One row per (group, topic, partition). ``committed`` is the offset the group will resume
    from (the next record to read, not the last one read); ``lag`` = ``end_offset`` -
    ``committed``: offsets, not records, still to read (on a compacted topic, fewer records
    than that may remain); ``<NA>`` where the group has no commit.
    """
    import pandas as pd

    rows = [
        {
            "group": o.group, "topic": o.topic, "partition": o.partition, "committed": o.committed,
            "end_offset": o.end_offset, "lag": o.lag,
        }
        for o in sorted(offsets, key=lambda o: (o.group, o.topic, o.partition))
    ]
    frame = pd.DataFrame(rows, columns=list(GROUP_COLUMNS))
    for column in ("committed", "end_offset", "lag"):
        frame[column] = frame[column].astype("Int64")
    frame["partition"] = frame["partition"].astype("int64")
    return frame


def segments_frame(segments: Iterable[Segment], *, timestamps: bool = True) -> pd.DataFrame:
    """One row per segment from :func:`~kafka_crud.list_segments`: the columns of :data:`SEGMENT_COLUMNS`.

    ``stamped`` says whether a batch carries a delete horizon; ``delete_horizon`` is that time
    (UTC). ``timestamps=False`` leaves out ``delete_horizon``, for output that does not change
    from run to run.
    """
    import pandas as pd  # when a table is built, not with the package

    rows = [
        {
            "partition": s.partition,
            "segment": s.path.name,
            "base_offset": s.base_offset,
            "first_offset": s.first_offset,
            "last_offset": s.last_offset,
            "records": s.records,
            "tombstones": s.tombstones,
            "batches": s.batches,
            "size_bytes": s.size_bytes,
            "active": s.active,
            "cleaned": s.cleaned,
            "stamped": s.delete_horizon_ms is not None,
            "delete_horizon": s.delete_horizon_ms,
        }
        for s in segments
    ]
    frame = pd.DataFrame(rows, columns=list(SEGMENT_COLUMNS))
    for column in ("first_offset", "last_offset", "tombstones"):
        frame[column] = frame[column].astype("Int64")
    frame["delete_horizon"] = pd.to_datetime(frame["delete_horizon"].astype("Int64"), unit="ms", utc=True)
    if not timestamps:
        frame = frame.drop(columns=["delete_horizon"])
    return frame


def users_frame(users: Iterable[StoredUser]) -> pd.DataFrame:
    """Users as a service's store holds them: email, name, and where their record is."""
    import pandas as pd

    rows = [
        {"email": u.user.email, "name": u.user.name, "partition": u.position.partition, "offset": u.position.offset}
        for u in users
    ]
    frame = pd.DataFrame(rows, columns=["email", "name", "partition", "offset"])
    return frame.astype({"partition": "int64", "offset": "int64"})


def style_log(frame: pd.DataFrame, *, caption: str | None = None) -> StyledTable:
    """The log colour-coded by ``status``, each status also a symbol and a word: ● live (blue),
    ○ superseded (grey), ✝ tombstone (orange).

    Works on :func:`records_frame` and :func:`compare_frame` output (a removed record is also
    struck through, and its ``outcome`` says ``removed``). Returns a :class:`StyledTable`:
    styled HTML in a notebook, and the same table as plain text everywhere else (``repr()``,
    GitHub, a terminal, a screen reader). The HTML is the same from run to run: the table id
    is a hash of what it shows, not random, and differs between tables (the colours are CSS
    rules on cell ids, and a page with two tables of one id would colour both by the last).
    The index is hidden: the partition and offset columns say where each record is.
    """
    if "status" not in frame.columns:
        raise ValueError("style_log needs the 'status' column of records_frame() or compare_frame()")
    columns = list(frame.columns)

    def row_style(row: pd.Series) -> list[str]:
        background, text = STATUS_COLOURS.get(str(row["status"]), ("", ""))
        css = f"background-color: {background}; color: {text}" if background else ""
        if "outcome" in columns and row["outcome"] == "removed":
            css += "; text-decoration: line-through"
        return [css] * len(columns)

    hidden = hidden_markers(frame)
    legend = STATUS_LEGEND + (f"; {hidden} roll marker(s) of the kit hidden" if hidden else "")
    full_caption = f"{caption} ({legend})" if caption else legend
    shown = f"{caption}\n{frame.to_csv()}".encode("utf-8", "surrogatepass")
    table_id = f"kafka-crud-log-{hashlib.blake2b(shown, digest_size=5).hexdigest()}"
    styler = frame.style.set_uuid(table_id).hide(axis="index").apply(row_style, axis=1)
    # Keys and values are whatever producers wrote: escaped, never rendered as HTML.
    styler = styler.format(escape="html", na_rep="")  # a raw "<NA>" would vanish as an unknown tag
    styler = styler.format(na_rep="null", escape="html", subset=[c for c in ("key", "value") if c in columns])
    styler = styler.format(lambda s: status_label(str(s)), subset=["status"])
    return StyledTable(
        frame, styler.set_caption(full_caption), caption=full_caption,
        # An empty value is not a tombstone: in text it reads "" (a tombstone's value reads null).
        formatters={"status": lambda s: status_label(str(s)), "value": lambda v: str(v) or '""'},
        nulls={"key": "null", "value": "null"},
    )
