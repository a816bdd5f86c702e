"""report.md: the run's tables per group, its rankings by throughput and by cost per 1k tokens, its plots and
what each metric means, in GitHub-flavoured markdown."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..record import cell_flags, sampling_flags
from .cells import RunView
from .tables import Table, cost_ranking, definitions, group_tables, throughput_rankings


@dataclass(frozen=True)
class Plot:
    file: str  # relative to the report folder
    title: str
    caption: str


@dataclass(frozen=True)
class RunInfo:
    """What the report says about where its figures come from."""

    source: str  # "this run" or the saved files
    when: str
    machines: tuple[str, ...]
    commit: str


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(table: Table) -> list[str]:
    right = table.right_aligned
    lines = ["| " + " | ".join(_escape(h) for h in table.headers) + " |",
             "| " + " | ".join("---:" if r else "---" for r in right) + " |"]
    lines += ["| " + " | ".join(_escape(cell) if cell else " " for cell in row) + " |" for row in table.rows]
    if table.notes:
        lines += ["", *(f"- {_escape(note)}" for note in table.notes)]
    return lines


def describe_run(view: RunView, info: RunInfo) -> list[str]:
    cells = len(view.cells)
    lines = [f"{cells} cell{'s' if cells != 1 else ''} from {info.source}"
             + (f", {info.when}" if info.when else "") + "."]
    if info.machines:
        lines.append(f"Measured on {', '.join(info.machines)}" + (f", commit {info.commit}" if info.commit else "")
                     + ".")
    if view.cost.usd is not None:
        lines.append(f"Cost: {view.cost.describe()}.")
    flagged = [c for c in view.cells if sampling_flags(c.record)]
    raised = [c for c in view.cells if cell_flags(c.record)]
    if flagged:
        lines.append(f"{len(flagged)} cell{'s' if len(flagged) != 1 else ''} marked ! stopped noisier than the stdrel "
                     "target or with fewer samples than the minimum: read their figures with care.")
    if raised:
        lines.append(f"{len(raised)} cell{'s' if len(raised) != 1 else ''} marked ! flagged by the benchmark itself "
                     "(gpubench.flag): the notes under the tables say why.")
    return lines


def report_markdown(view: RunView, info: RunInfo, plots: Sequence[Plot], missing: str | None) -> str:
    lines = ["# gpubench report", "", " ".join(describe_run(view, info)), "", "## Results"]
    for table in group_tables(view, detail=True):
        lines += ["", f"### {table.title}", "", *markdown_table(table)]
    rankings = throughput_rankings(view)
    by_cost = cost_ranking(view)
    if rankings or by_cost:
        lines += ["", "## Rankings"]
        for table in [*rankings, *([by_cost] if by_cost else [])]:
            lines += ["", f"### {table.title}", "", *markdown_table(table)]
    if plots or missing:
        lines += ["", "## Plots", ""]
        if missing:
            lines += [missing, ""]
        for plot in plots:
            lines += [f"### {plot.title}", "", f"![{_escape(plot.title)}]({plot.file})", "", plot.caption, ""]
    lines += ["", "## Metrics", "", *markdown_table(definitions(view)), ""]
    return "\n".join(lines)
