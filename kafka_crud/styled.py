"""A styled table that reads as the table itself everywhere: in a browser, and as plain text.

A pandas ``Styler`` shows in JupyterLab as coloured HTML, but its text form is
``<pandas.io.formats.style.Styler at 0x...>``: what GitHub's diff of a notebook, a terminal, a
screen reader or a test sees. :class:`StyledTable` carries both: ``_repr_html_`` is the
styled HTML (the same from run to run), ``repr()`` a plain-text table of the same rows with
the same words (a record's status is a word and a symbol, never a colour alone).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from pandas.io.formats.style import Styler

__all__ = ["StyledTable"]

#: Cells longer than this are cut, with "…", in the text form (the HTML shows them whole).
MAX_CELL_CHARS = 48
#: Rows shown by ``repr()``; :meth:`StyledTable.to_string` shows them all by default.
REPR_ROWS = 60


def _missing(value: Any) -> bool:
    import pandas as pd

    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _cell(text: str) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= MAX_CELL_CHARS else text[: MAX_CELL_CHARS - 1] + "…"


class StyledTable:
    """A DataFrame with its styled HTML (in a notebook) and a plain-text table (everywhere else).

    ``frame`` is the data shown, ``styler`` the pandas Styler that renders it as HTML,
    ``caption`` the line above the table. ``formatters`` map a column to how its cells read as
    text (the status column, for example, as ``● live``); ``nulls`` say what a missing value
    reads as per column (default: an empty cell).
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        styler: Styler,
        *,
        caption: str = "",
        formatters: Mapping[str, Callable[[Any], str]] | None = None,
        nulls: Mapping[str, str] | None = None,
    ) -> None:
        self.frame = frame
        """The rows and columns shown."""
        self.styler = styler
        """The pandas Styler behind the HTML (for further styling of your own)."""
        self.caption = caption
        """The caption: what the table shows, and the legend of its colours and symbols."""
        self._formatters = dict(formatters or {})
        self._nulls = dict(nulls or {})

    def to_html(self, **kwargs: Any) -> str:
        """The styled table as HTML (``Styler.to_html``; keyword arguments are passed on)."""
        return str(self.styler.to_html(**kwargs))

    def _repr_html_(self) -> str:
        return self.to_html()

    def rows(self) -> list[list[str]]:
        """Each row's cells as the text form shows them (status words and symbols included)."""
        columns = list(self.frame.columns)
        result: list[list[str]] = []
        for values in self.frame.itertuples(index=False, name=None):
            row = []
            for column, value in zip(columns, values, strict=True):
                if _missing(value):
                    row.append(self._nulls.get(column, ""))
                    continue
                formatter = self._formatters.get(column)
                row.append(_cell(formatter(value) if formatter else str(value)))
            result.append(row)
        return result

    def to_string(self, *, max_rows: int | None = None) -> str:
        """The caption and the table as plain text: text left-aligned, numbers right-aligned.

        ``max_rows`` shows the first rows only, and says how many more there are.
        """
        columns = [str(c) for c in self.frame.columns]
        rows = self.rows()
        hidden = 0
        if max_rows is not None and len(rows) > max_rows:
            hidden = len(rows) - max_rows
            rows = rows[:max_rows]
        numeric = [
            self.frame[c].dtype.kind in "iuf" and c not in self._formatters for c in self.frame.columns
        ]
        widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]

        def line(cells: list[str]) -> str:
            padded = [
                cell.rjust(width) if right else cell.ljust(width)
                for cell, width, right in zip(cells, widths, numeric, strict=True)
            ]
            return "  ".join(padded).rstrip()

        lines = [self.caption] if self.caption else []
        lines.append(line(columns))
        lines.append("  ".join("-" * w for w in widths))
        lines.extend(line(r) for r in rows)
        if hidden:
            lines.append(f"… {hidden} more row(s)")
        if not rows and not hidden:
            lines.append("(no rows)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.to_string(max_rows=REPR_ROWS)

    def __str__(self) -> str:
        return self.to_string()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

