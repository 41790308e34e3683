"""Tables read as themselves without a browser: the text form of style_log, and status never by colour alone."""

from __future__ import annotations

import pytest
from helpers import small_log as _records

from kafka_crud import LogRecord, StyledTable, compare_frame, records_frame, style_log
from kafka_crud.views import MARK_COLOURS, STATUS_COLOURS, STATUS_LEGEND, STATUS_SYMBOLS, status_label


def _lines(table: StyledTable) -> list[str]:
    return repr(table).splitlines()


def test_the_text_form_of_the_styled_log_is_the_table_with_a_status_word_per_row() -> None:
    table = style_log(records_frame(_records(), timestamps=False), caption="the log")

    lines = _lines(table)
    assert lines[0] == f"the log ({STATUS_LEGEND})"
    assert lines[1].split() == ["partition", "offset", "key", "value", "kind", "status", "superseded_by", "live"]
    rows = lines[3:]
    assert len(rows) == 5
    expected = [("ada@x", "○ superseded"), ("bob@x", "○ superseded"), ("ada@x", "● live"),
                ("bob@x", "✝ tombstone"), ("cy@x", "● live")]
    for row, (key, status) in zip(rows, expected, strict=True):
        assert key in row
        assert status in row
    assert "null" in rows[3]  # a tombstone's value
    assert '""' in rows[4]
    assert "empty value" in rows[4]
    assert "object at 0x" not in repr(table)
    assert " at 0x" not in str(table)


def test_notebooks_get_html_and_text_and_the_text_is_not_an_object_address() -> None:
    from IPython.core.formatters import DisplayFormatter
    from IPython.lib.pretty import pretty

    table = style_log(records_frame(_records(), timestamps=False))

    data, _ = DisplayFormatter().format(table)  # type: ignore[no-untyped-call]
    assert data["text/html"] == table.to_html() == table._repr_html_()
    assert data["text/plain"] == repr(table) == pretty(table)  # type: ignore[no-untyped-call]
    assert "Styler" not in data["text/plain"]
    assert "0x" not in data["text/plain"]
    for key in ("ada@x", "bob@x", "cy@x"):
        assert key in data["text/plain"]


def test_the_html_is_the_same_from_run_to_run_and_says_the_status_in_words() -> None:
    frame = records_frame(_records(), timestamps=False)

    first, second = style_log(frame).to_html(), style_log(frame).to_html()

    assert first == second
    assert "● live" in first
    assert "○ superseded" in first
    assert "✝ tombstone" in first
    assert STATUS_LEGEND in first
    assert all(background in first for background, _ in STATUS_COLOURS.values())
    assert ">null<" in first
    assert "<NA>" not in first


def test_compare_frame_text_says_kept_removed_and_new() -> None:
    before = _records()
    roll = LogRecord("t", 0, 4, 1_700_000_000_010, b"new@example.com", b"{}")
    after = [r for r in before if (r.partition, r.offset) in {(0, 2), (0, 3), (1, 0)}] + [roll]

    table = style_log(compare_frame(before, after))

    rows = _lines(table)[3:]
    outcomes = [row.split()[-1] for row in rows]
    assert outcomes == ["removed", "removed", "kept", "kept", "new", "kept"]
    assert "line-through" in table.to_html()


def test_long_tables_are_cut_in_repr_with_a_count_and_shown_whole_by_str() -> None:
    records = [LogRecord("t", 0, o, 0, f"u{o}@x".encode(), b"v") for o in range(75)]
    table = style_log(records_frame(records, timestamps=False))

    assert _lines(table)[-1] == "… 15 more row(s)"
    assert len(str(table).splitlines()) == 3 + 75
    assert table.to_string(max_rows=3).splitlines()[-1] == "… 72 more row(s)"


def test_keys_are_escaped_in_html_but_read_as_written_in_text() -> None:
    record = LogRecord("t", 0, 0, 0, b"<b>x</b>@y", b"<script>")
    table = style_log(records_frame([record], timestamps=False))

    assert "<b>x</b>@y" in repr(table)
    assert "<b>x</b>" not in table.to_html()
    assert "&lt;b&gt;x&lt;/b&gt;@y" in table.to_html()


def test_an_empty_log_reads_as_a_table_without_rows() -> None:
    table = style_log(records_frame([], timestamps=False))

    assert _lines(table)[-1] == "(no rows)"


def test_style_log_needs_a_status_column() -> None:
    frame = records_frame(_records(), timestamps=False).drop(columns=["status"])

    with pytest.raises(ValueError, match="status"):
        style_log(frame)


def test_the_palette_is_okabe_ito_and_every_status_has_a_symbol() -> None:
    assert MARK_COLOURS == {"live": "#0072B2", "superseded": "#8c8c8c", "tombstone": "#D55E00"}
    assert set(STATUS_SYMBOLS) == set(STATUS_COLOURS) == set(MARK_COLOURS) == {"live", "superseded", "tombstone"}
    assert [status_label(s) for s in ("live", "superseded", "tombstone")] == ["● live", "○ superseded", "✝ tombstone"]


def test_plot_log_marks_each_status_with_its_own_shape() -> None:
    import matplotlib

    matplotlib.use("Agg")
    from kafka_crud import plot_log

    figure = plot_log(_records(), title="the log")

    handles, labels = figure.axes[0].get_legend_handles_labels()
    assert labels == ["superseded (2)", "live (2)", "tombstone (1)"]
    paths = [h.get_paths()[0].vertices.tobytes() for h in handles]  # type: ignore[attr-defined]
    assert len(set(paths)) == 3  # three marker shapes, not one shape in three colours
