"""The terminal summary: one gpubench table, a part per group (kernels, collectives, serving, the variants of
each commit), within 120 columns unless -v asks for every column at full width."""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Iterable, Sequence

from ..gate import Verdict
from ..record import CellResult, cell_flags, sampling_flags
from .cells import RunView
from .tables import Table, group_tables

DEFAULT_WIDTH = 120
MIN_CELL_WIDTH = 16


def _shorten(text: str, width: int) -> str:
    """Cut the middle: an id's start names the test and its end the target, both worth keeping."""
    if len(text) <= width:
        return text
    keep = width - 1
    return text[: (keep + 1) // 2] + "\u2026" + text[len(text) - keep // 2:]


def render(table: Table, width: int | None) -> list[str]:
    """The table's title, header and rows, columns two spaces apart; with a width, the first column (the cell
    ids) gives way until the rows fit, and notes wrap."""
    rows = [table.headers, *table.rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(table.headers))]
    if width is not None:
        overflow = sum(widths) + 2 * (len(widths) - 1) - width
        if overflow > 0:
            widths[0] = max(MIN_CELL_WIDTH, widths[0] - overflow)
    right = table.right_aligned
    lines = [table.title]
    for row in rows:
        cells = [_shorten(row[0], widths[0]).ljust(widths[0])]
        cells += [value.rjust(w) if right[i] else value.ljust(w)
                  for i, (value, w) in enumerate(zip(row, widths)) if i > 0]
        lines.append("  ".join(cells).rstrip())
    for note in table.notes:
        lines.extend(textwrap.wrap(note, width, subsequent_indent="    ") if width else [note])
    return lines


def summary_lines(results: Sequence[CellResult], verbose: bool = False, width: int = DEFAULT_WIDTH) -> list[str]:
    """Every group's table, a blank line apart, then what the reader must know: flagged cells and the cost."""
    view = RunView.of([r.record for r in results])
    lines: list[str] = []
    for table in group_tables(view, detail=verbose):
        if lines:
            lines.append("")
        lines.extend(render(table, None if verbose else width))
    flagged = sum(bool(sampling_flags(c.record)) for c in view.cells)
    raised = sum(bool(cell_flags(c.record)) for c in view.cells)
    closing = []
    if flagged:
        closing.append(f"! {flagged} cell{'s' if flagged != 1 else ''} stopped noisier than the stdrel target or with "
                       "fewer samples than the minimum: read their figures with care (--gpubench-max-time gives them "
                       "longer)")
    if raised:
        closing.append(f"! {raised} cell{'s' if raised != 1 else ''} flagged by the benchmark itself (gpubench.flag): "
                       "the notes under the table say why")
    if view.cost.usd is not None:
        closing.append(f"cost: {view.cost.describe()}")
    for line in closing:
        lines.extend([line] if verbose else textwrap.wrap(line, width, subsequent_indent="    "))
    return lines


def gate_lines(verdicts: Iterable[Verdict]) -> list[str]:
    """Counts per outcome, then one line for every cell that failed or needs a look."""
    ordered = sorted(verdicts, key=lambda v: v.fullname)
    counts = Counter(v.outcome for v in ordered)
    lines = [", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) or "no gpubench cell was judged"]
    for verdict in ordered:
        if verdict.outcome in ("regressed", "failed", "unstable", "slower-not-significant", "no-baseline", "different-hardware", "missing"):
            lines.append(f"{verdict.fullname}: {verdict.describe()}")
    return lines
