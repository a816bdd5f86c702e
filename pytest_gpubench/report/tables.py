"""The tables of a run, as plain rows of text that the terminal, report.md and index.html render alike: one
table a group (kernels, collectives, serving, the variants of each commit), units chosen per group, flagged
cells marked; the rankings by throughput and by cost per 1k tokens; the metrics' definitions."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..metrics import all_metrics, distribution_key, metric, title_of, unit_of
from .cells import Cell, RunView, number, time_unit, usd
from .speedup import Comparison, totals_lines

FLAG_MARK = "! "
RATE_KEYS = ("tflops", "pct_peak_tflops", "gbps", "pct_peak_gbps", "items_per_s", "tokens_per_s", "samples_per_s",
             "device_idle_pct")
COLLECTIVE_KEYS = ("ranks", "algbw_gbps", "busbw_gbps", "pct_peak_link")
# the figure a cell is ranked by, best known first: what its work or load says it produces
HEADLINE_KEYS = ("output_token_throughput", "tokens_per_s", "tflops", "gbps", "busbw_gbps", "items_per_s",
                 "samples_per_s", "request_throughput")
SERVING_LATENCIES = ("ttft", "tpot", "itl")
NUMERIC = re.compile(r"[-+$\[\]\d.,/%x ]+|n/a|inf|-inf")


@dataclass(frozen=True)
class Table:
    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    notes: tuple[str, ...] = ()

    @property
    def right_aligned(self) -> tuple[bool, ...]:
        """Columns of figures go to the right: those whose every value is a number, a price, a share, a ratio,
        an interval or a pair of figures."""
        return tuple(all(NUMERIC.fullmatch(row[i]) for row in self.rows if row[i]) and any(row[i] for row in self.rows)
                     for i in range(len(self.headers)))


def figure(key: str, value: float | None) -> str:
    """A value as its metric reads: counts (unit-less metrics) whole, the rest to four figures."""
    if value is not None and not unit_of(key) and float(value).is_integer():
        return f"{int(value):,}"
    return number(value)


def _label(cell: Cell) -> str:
    return (FLAG_MARK if cell.flags else "") + cell.label


def _samples(cell: Cell) -> str:
    count = cell.result.summary.count
    return str(count) if cell.record.loops == 1 else f"{count}x{cell.record.loops}"


def _stdrel(cell: Cell) -> str:
    return f"{cell.values['stdrel_pct']:.2f}%" if "stdrel_pct" in cell.values else "n/a"


def _present(cells: Sequence[Cell], keys: Sequence[str]) -> list[str]:
    return [key for key in keys if any(key in cell.values for cell in cells)]


def _cost_columns(cells: Sequence[Cell]) -> list[tuple[str, list[str]]]:
    columns = []
    if any(c.cost.usd_per_1k_tokens is not None for c in cells):
        columns.append(("$/1k tok", [usd(c.cost.usd_per_1k_tokens) for c in cells]))
    if any(c.cost.usd is not None for c in cells):
        columns.append(("$", [usd(c.cost.usd) for c in cells]))
    return columns


def _flag_notes(cells: Sequence[Cell]) -> list[str]:
    return [f"{FLAG_MARK}{cell.label}: {'; '.join(cell.flags)}" for cell in cells if cell.flags]


def _build(title: str, columns: Sequence[tuple[str, Sequence[str]]], notes: Sequence[str] = ()) -> Table:
    headers = tuple(header for header, _ in columns)
    rows = tuple(zip(*(values for _, values in columns))) if columns else ()
    return Table(title, headers, tuple(tuple(row) for row in rows), tuple(notes))


def _unregistered(cells: Sequence[Cell]) -> list[str]:
    return sorted({key for cell in cells for key in cell.metrics if metric(key) is None})


def kernels_table(cells: Sequence[Cell], detail: bool, title: str = "kernels") -> Table:
    unit, scale = time_unit([c.result.summary.median for c in cells])
    columns: list[tuple[str, Sequence[str]]] = [
        ("cell", [_label(c) for c in cells]),
        (f"median {unit}", [number(c.result.summary.median / scale) for c in cells]),
    ]
    if detail:
        columns.append((f"p99 {unit}", [number(c.result.summary.p99 / scale) for c in cells]))
    columns += [("stdrel", [_stdrel(c) for c in cells]), ("samples", [_samples(c) for c in cells])]
    if detail:
        columns.append(("timer", [f"{c.result.timer}/{c.result.cache}" for c in cells]))
    if len({c.result.work for c in cells}) > 1:  # only where cells do different amounts of work
        columns.append(("work", [c.result.work or "-" for c in cells]))
    keys = _present(cells, RATE_KEYS) + (_unregistered(cells) if detail else [])
    columns += [(title_of(key), [figure(key, c.values.get(key)) for c in cells]) for key in keys]
    columns += _cost_columns(cells)
    if detail:
        columns.append(("stopped because", [c.result.stop_reason for c in cells]))
    return _build(f"{title}: median in {unit}", columns, _flag_notes(cells))


def collectives_table(cells: Sequence[Cell], detail: bool) -> Table:
    unit, scale = time_unit([c.result.summary.median for c in cells])
    columns: list[tuple[str, Sequence[str]]] = [
        ("cell", [_label(c) for c in cells]),
        (f"median {unit}", [number(c.result.summary.median / scale) for c in cells]),
        ("stdrel", [_stdrel(c) for c in cells]),
        ("samples", [_samples(c) for c in cells]),
    ]
    keys = _present(cells, COLLECTIVE_KEYS) + (_unregistered(cells) if detail else [])
    columns += [(title_of(key), [figure(key, c.values.get(key)) for c in cells]) for key in keys]
    columns += _cost_columns(cells)
    if detail:
        columns.append(("stopped because", [c.result.stop_reason for c in cells]))
    return _build(f"collectives: median in {unit}", columns, _flag_notes(cells))


def _latency_unit(cells: Sequence[Cell]) -> tuple[str, float]:
    """One unit for every latency of the serving group: ms (as recorded, as vLLM reports them), or s where the
    group's typical time to first token is a second or more."""
    ttfts = sorted(c.values[key] for c in cells if (key := distribution_key("ttft", "p50")) in c.values)
    return ("s", 1.0) if ttfts and ttfts[len(ttfts) // 2] >= 1000 else ("ms", 1e-3)


def client_check(cell: Cell) -> str:
    """The load generator's self-check in a word: "ok" when the server, not the client, set the pace (with the
    client processes it took, where a client-bound load was sent again with more), "BOUND" when the client
    still limited the run and the figures are the client's."""
    if "client_bound" not in cell.values:
        return "-"
    processes = int(cell.values.get("client_processes", 1))
    shown = "BOUND" if cell.values["client_bound"] else "ok"
    return f"{shown} ×{processes}" if processes > 1 else shown


def serving_table(cells: Sequence[Cell], detail: bool) -> Table:
    unit, scale = _latency_unit(cells)

    def latency(cell: Cell, key: str, figures: int = 4) -> str:
        value = cell.values.get(key)
        if value is None:
            return "-"
        shown = value / 1e3 / scale
        # two to a column in the compact table: three figures each keep it within the width
        return number(shown) if figures == 4 or shown >= 1000 else f"{shown:#.3g}".rstrip(".")

    columns: list[tuple[str, Sequence[str]]] = [("cell", [_label(c) for c in cells])]
    if any(c.concurrency is not None for c in cells):
        columns.append(("conc", [figure("max_concurrency", c.concurrency) for c in cells]))
    names = (*SERVING_LATENCIES, "e2el") if detail else SERVING_LATENCIES
    stats = ("p50", "p90", "p99") if detail else ("p50", "p99")
    for name in names:
        title = title_of(distribution_key(name, "p50")).split()[0]
        if detail:
            columns += [(f"{title} {stat}", [latency(c, distribution_key(name, stat)) for c in cells]) for stat in stats]
        else:  # two figures a cell, to keep within the width
            columns.append((f"{title} p50/p99", [f"{latency(c, distribution_key(name, 'p50'), 3)}/"
                                                 f"{latency(c, distribution_key(name, 'p99'), 3)}" for c in cells]))
    if any("client_bound" in c.values for c in cells):
        columns.append(("client", [client_check(c) for c in cells]))
    keys = ["output_token_throughput", "request_throughput", "failed"]
    if detail:
        keys = ["output_token_throughput", "total_token_throughput", "request_throughput", "goodput", "completed",
                "failed", *_unregistered(cells)]
    columns += [(title_of(key), [figure(key, c.values.get(key)) for c in cells]) for key in _present(cells, keys)]
    # a serving cell's cost that matters is per token; what the whole cell cost is in -v, report.md and the JSON
    columns += [column for column in _cost_columns(cells) if detail or column[0] != "$"]
    return _build(f"serving: latencies in {unit}", columns, _flag_notes(cells))


def headline(cell: Cell) -> str | None:
    return next((key for key in HEADLINE_KEYS if key in cell.values), None)


def variants_tables(view: RunView, detail: bool) -> list[Table]:
    """One table per commit (or one for a run of variants without commits), each comparison's baseline first."""
    by_commit: dict[str | None, list[Comparison]] = {}
    for comparison in view.comparisons:
        by_commit.setdefault(comparison.commit, []).append(comparison)
    cells = view.by_nodeid()
    tables = []
    for commit, found in sorted(by_commit.items(), key=lambda item: item[0] or ""):
        members = [cells[c.baseline_nodeid] for c in found] + [cells[v.nodeid] for c in found for v in c.variants]
        unit, scale = time_unit([m.result.summary.median for m in members])
        rate = next((key for key in HEADLINE_KEYS if any(key in m.values for m in members)), None)
        headers = ["cell", "variant", f"median {unit}", *([title_of(rate)] if rate else []), "speed-up",
                   "95% interval", "verdict", *(["evidence"] if detail else [])]
        rows = []
        for comparison in found:
            base = cells[comparison.baseline_nodeid]
            rows.append((_label(base), f"{comparison.baseline_variant} (baseline)",
                         number(comparison.baseline_median_s / scale),
                         *([figure(rate, base.values.get(rate))] if rate else []), "1", "", "", *([""] if detail else [])))
            for row in comparison.variants:
                cell = cells[row.nodeid]
                rows.append((_label(cell), row.variant, number(row.median_s / scale),
                             *([figure(rate, cell.values.get(rate))] if rate else []), f"{row.speedup:.3f}x",
                             f"[{row.low:.3f}, {row.high:.3f}]", row.verdict, *([row.evidence] if detail else [])))
        title = f"variants of commit {commit}" if commit else "variants"
        tables.append(Table(f"{title}: median in {unit}, speed-up = baseline time / variant time", tuple(headers),
                            tuple(rows), tuple(_flag_notes(members))))
    if tables:
        last = tables[-1]
        tables[-1] = Table(last.title, last.headers, last.rows, (*last.notes, *totals_lines(view.comparisons)))
    return tables


def group_tables(view: RunView, detail: bool) -> list[Table]:
    tables: list[Table] = []
    for name, cells in view.groups:
        if name == "kernels":
            tables.append(kernels_table(cells, detail))
        elif name == "collectives":
            tables.append(collectives_table(cells, detail))
        elif name == "serving":
            tables.append(serving_table(cells, detail))
        else:
            tables.extend(variants_tables(view, detail))
    return tables


def throughput_rankings(view: RunView) -> list[Table]:
    """For each throughput some cells report, those cells from the highest."""
    tables = []
    for key in HEADLINE_KEYS:
        cells = sorted((c for c in view.cells if key in c.values), key=lambda c: -c.values[key])
        if len(cells) < 2:
            continue
        unit = unit_of(key)
        columns: list[tuple[str, Sequence[str]]] = [
            ("rank", [str(i + 1) for i in range(len(cells))]),
            ("cell", [_label(c) for c in cells]),
            ("target", [c.target for c in cells]),
            (f"{title_of(key)}" + (f" ({unit})" if unit and unit != title_of(key) else ""),
             [figure(key, c.values[key]) for c in cells]),
        ]
        columns += _cost_columns(cells)
        tables.append(_build(f"ranked by {title_of(key)}", columns))
    return tables


def cost_ranking(view: RunView) -> Table | None:
    """Cells that produce tokens, cheapest per 1,000 tokens first (how the GPT-OSS seed ranks GPUs)."""
    cells = sorted((c for c in view.cells if c.cost.usd_per_1k_tokens is not None),
                   key=lambda c: c.cost.usd_per_1k_tokens or 0.0)
    if not cells:
        return None
    rate = [next((c.values[k] for k in ("output_token_throughput", "tokens_per_s") if k in c.values), None) for c in cells]
    return _build("ranked by cost per 1k tokens", [
        ("rank", [str(i + 1) for i in range(len(cells))]),
        ("cell", [_label(c) for c in cells]),
        ("target", [c.target for c in cells]),
        ("tok/s", [number(r) for r in rate]),
        ("$/h", [usd(c.cost.usd_per_hour) for c in cells]),
        ("$/1k tok", [usd(c.cost.usd_per_1k_tokens) for c in cells]),
    ])


def definitions(view: RunView) -> Table:
    """Key, unit, title and definition of every registered metric this run has, and the keys it has that the
    registry does not know (a user's own metrics)."""
    present = set(view.metric_keys())
    rows = [(m.key, m.unit or "-", m.title, m.definition) for m in all_metrics() if m.key in present]
    rows += [(key, "-", key, "recorded by the benchmark; not a pytest-gpubench metric") for key in
             sorted(present - {m.key for m in all_metrics()})]
    return Table("metrics", ("key", "unit", "title", "definition"), tuple(rows))
