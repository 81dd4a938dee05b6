"""Numbers, percentages and markdown tables as detkd's reports print them.

Every formatter writes :data:`MISSING` (``-``) for a missing value (None), so that a table cell
never reads ``None``. The reports differ in details (the doctor writes ``43.2 %``, the demo's
tables ``43.2``, the metrics table ``43.21``); each keeps its own through the parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

MISSING = "-"


def num(value: float | None, spec: str = ".3f", *, scale: float = 1.0) -> str:
    """``scale * value`` in the format ``spec`` (``.2f``, ``+.1f``, ``.3g``; three decimals by
    default); ``-`` for None."""
    if value is None:
        return MISSING
    return format(value if scale == 1 else scale * value, spec)


def pct(value: float | None, digits: int = 1, *, std: float | None = None, signed: bool = False,
        suffix: str = "") -> str:
    """A fraction in percent: ``0.6523`` -> ``65.2`` (``digits`` decimals), with ``± 1.2`` when
    ``std`` is given, ``+`` on gains when ``signed`` (``+4.1``, ``-0.3``), then ``suffix`` (e.g.
    ``" %"``); ``-`` for None (without the suffix)."""
    if value is None:
        return MISSING
    text = f"{100 * value:{'+' if signed else ''}.{digits}f}"
    if std is not None:
        text += f" ± {100 * std:.{digits}f}"
    return text + suffix


def table_row(cells: Iterable[str]) -> str:
    """``| a | b |``: one line of a markdown table."""
    return "| " + " | ".join(cells) + " |"


def table_rule(columns: int, right_from: int | None = None) -> str:
    """``|---|---:|``: the line under a table's header; the columns from index ``right_from`` on
    right-aligned (None: every column left-aligned)."""
    right = columns if right_from is None else right_from
    return "|" + "".join("---|" if i < right else "---:|" for i in range(columns))


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]], right_from: int | None = None) -> list[str]:
    """A markdown table's lines: the header, its rule (see :func:`table_rule`), a line a row."""
    return [table_row(header), table_rule(len(header), right_from), *[table_row(r) for r in rows]]


def padded_table(header: Sequence[str], rows: Sequence[Sequence[str]], right_from: int = 1) -> list[str]:
    """A markdown table whose columns are padded to their widest cell, to be read as plain text:
    columns before ``right_from`` left-justified, the others right-justified; the rule is dashes
    only (``|-------|------|``)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return table_row(c.ljust(w) if i < right_from else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *[line(r) for r in rows]]
