"""index.html: one static page (no script, no server, nothing fetched) that shows the report's plots and
tables; open it from the folder in any browser."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from .cells import RunView
from .report_md import Plot, RunInfo, describe_run
from .tables import Table, cost_ranking, definitions, group_tables, throughput_rankings

STYLE = """
body { font-family: system-ui, -apple-system, "DejaVu Sans", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #1b1b1b; background: #ffffff; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: 0.2em; margin-top: 1.6em; }
h3 { font-size: 1.05em; margin-bottom: 0.4em; }
p.run { color: #444; }
nav a { margin-right: 1em; }
.plots { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 1.2em; }
figure { margin: 0; border: 1px solid #d0d7de; border-radius: 6px; padding: 0.6em; background: #fafbfc; }
figure img { width: 100%; height: auto; display: block; }
figcaption { font-size: 0.85em; color: #555; margin-top: 0.4em; }
.scroll { overflow-x: auto; margin-bottom: 0.6em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #d0d7de; padding: 0.25em 0.6em; white-space: nowrap; }
td.wrap { white-space: normal; min-width: 30em; }
th { background: #f3f5f7; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.cell { font-family: "DejaVu Sans Mono", monospace; }
tr.flagged td { background: #fff8e1; }
ul.notes { font-size: 0.85em; color: #555; }
.missing { background: #fff8e1; border: 1px solid #e0c060; padding: 0.6em; }
"""


def _kind(header: str, index: int, right: bool) -> str:
    if right:
        return "num"
    if index == 0:
        return "cell"
    return "wrap" if header == "definition" else "text"


def html_table(table: Table) -> str:
    right = table.right_aligned
    head = "".join(f"<th>{escape(h)}</th>" for h in table.headers)
    body = []
    for row in table.rows:
        flagged = row[0].startswith("! ")
        cells = "".join(f'<td class="{_kind(table.headers[i], i, right[i])}">{escape(value)}</td>'
                        for i, value in enumerate(row))
        body.append(f'<tr{" class=flagged" if flagged else ""}>{cells}</tr>')
    notes = ("<ul class=notes>" + "".join(f"<li>{escape(n)}</li>" for n in table.notes) + "</ul>") if table.notes else ""
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>{notes}'


def index_html(view: RunView, info: RunInfo, plots: Sequence[Plot], missing: str | None) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>gpubench report: {len(view.cells)} cells</title><style>{STYLE}</style></head><body>",
        "<h1>gpubench report</h1>",
        f'<p class="run">{escape(" ".join(describe_run(view, info)))}</p>',
        '<nav><a href="report.md">report.md</a><a href="results.csv">results.csv</a></nav>',
    ]
    if plots or missing:
        parts.append("<h2>Plots</h2>")
    if missing:
        parts.append(f'<p class="missing">{escape(missing)}</p>')
    if plots:
        parts.append('<div class="plots">')
        for plot in plots:
            parts.append(f'<figure><img src="{escape(plot.file)}" alt="{escape(plot.title)}">'
                         f"<figcaption><b>{escape(plot.title)}.</b> {escape(plot.caption)}</figcaption></figure>")
        parts.append("</div>")
    parts.append("<h2>Results</h2>")
    for table in group_tables(view, detail=True):
        parts += [f"<h3>{escape(table.title)}</h3>", html_table(table)]
    rankings = throughput_rankings(view)
    by_cost = cost_ranking(view)
    if rankings or by_cost:
        parts.append("<h2>Rankings</h2>")
        for table in [*rankings, *([by_cost] if by_cost else [])]:
            parts += [f"<h3>{escape(table.title)}</h3>", html_table(table)]
    parts += ["<h2>Metrics</h2>", html_table(definitions(view)), "</body></html>", ""]
    return "\n".join(parts)
