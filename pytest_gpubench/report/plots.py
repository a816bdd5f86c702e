"""The report's plots, drawn with matplotlib (the ``report`` extra) where the run has what they show: the
latency CDF of each serving cell, TTFT and TPOT against concurrency, speed-up bars with their intervals per
commit and variant, each kernel's share of its datasheet peak, the cost ranking, and this run against its
baseline when it compares. Each ``*_figure`` function returns a matplotlib Figure (None when the run has
nothing for it), so tests read its axes; :func:`draw_plots` saves them as PNG files."""

from __future__ import annotations

import gc
import importlib.util
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..metrics import distribution_key, title_of
from .cells import Cell, RunView
from .report_md import Plot

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MISSING_MATPLOTLIB = "plots need matplotlib: pip install 'pytest-gpubench[report]'"
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
FASTER, SLOWER = "#2ca02c", "#d62728"
WIDTH_IN = 9.0
DPI = 100


def missing_extra() -> str | None:
    """One line saying what to install when matplotlib is not there; None when it is."""
    return None if importlib.util.find_spec("matplotlib") is not None else MISSING_MATPLOTLIB


def _figure(height_in: float, columns: int = 1) -> tuple[Figure, list[Axes]]:
    # Figure, not pyplot: no global figure registry, no GUI backend, nothing left open between runs
    from matplotlib.figure import Figure

    figure = Figure(figsize=(WIDTH_IN, height_in), dpi=DPI, layout="constrained")
    axes = figure.subplots(1, columns, squeeze=False)[0]
    return figure, list(axes)


def _patch(colour: str, label: str) -> Any:
    from matplotlib.patches import Patch

    return Patch(color=colour, label=label)


def _bar_height(rows: int) -> float:
    return min(12.0, 1.4 + 0.32 * rows)


def _recorded(cell: Cell) -> str:
    """What a serving cell's samples are: 'TTFT' for the llm_load:ttft timer."""
    _, _, name = cell.record.timer.partition("llm_load:")
    return name.upper() if name else "latency"


def latency_cdf_figure(cells: Sequence[Cell]) -> Figure | None:
    """One line per serving cell: the share of its requests at or under each latency (its samples)."""
    serving = [c for c in cells if c.group == "serving" or (c.group == "variants" and "ttft_median_ms" in c.values)]
    if not serving:
        return None
    figure, (axes,) = _figure(4.8)
    for index, cell in enumerate(serving):
        samples_ms = np.sort(np.asarray(cell.record.samples_s) * 1e3)
        shares = np.arange(1, samples_ms.size + 1) / samples_ms.size
        axes.step(samples_ms, shares, where="post", color=COLOURS[index % len(COLOURS)], label=cell.label)
    recorded = sorted({_recorded(c) for c in serving})
    axes.set_xlabel(f"{' / '.join(recorded)} per request (ms)")
    axes.set_ylabel("share of requests at or under")
    axes.set_ylim(0, 1.02)
    lows = [float(np.min(c.record.samples_s)) for c in serving]
    highs = [float(np.max(c.record.samples_s)) for c in serving]
    if min(lows) > 0 and max(highs) / min(lows) > 50:
        axes.set_xscale("log")
    axes.set_title(f"Latency CDF per serving cell ({', '.join(recorded)})")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small", loc="lower right")
    return figure


def _series_key(cell: Cell) -> str:
    """A serving cell's line in the concurrency plot: its id without the concurrency."""
    concurrency = cell.concurrency
    label = cell.label
    if concurrency is not None:
        value = str(int(concurrency)) if float(concurrency).is_integer() else str(concurrency)
        label = re.sub(rf"(?<=[\[-]){re.escape(value)}(?=[-\]])-?", "", label, count=1).replace("-]", "]")
    return label


def concurrency_figure(cells: Sequence[Cell]) -> Figure | None:
    """TTFT and TPOT (p50 solid, p99 dashed) against the requests kept in flight, a line per series of cells
    that differ only in concurrency."""
    points = [c for c in cells if c.concurrency is not None and distribution_key("ttft", "p50") in c.values]
    series: dict[str, list[Cell]] = {}
    for cell in points:
        series.setdefault(_series_key(cell), []).append(cell)
    series = {k: sorted(v, key=lambda c: c.concurrency or 0.0) for k, v in series.items() if len(v) >= 2}
    if not series:
        return None
    figure, axes_list = _figure(4.6, columns=2)
    for axes, name in zip(axes_list, ("ttft", "tpot")):
        title = title_of(distribution_key(name, "p50")).split()[0]
        for index, (label, members) in enumerate(series.items()):
            colour = COLOURS[index % len(COLOURS)]
            x = [c.concurrency or 0.0 for c in members]  # every member has one: the series were built so
            for stat, style in (("p50", "-"), ("p99", "--")):
                key = distribution_key(name, stat)
                y = [c.values.get(key, math.nan) for c in members]
                axes.plot(x, y, style, marker="o", color=colour, label=f"{label} {stat}")
        axes.set_xscale("log", base=2)
        levels = sorted({c.concurrency or 0.0 for members in series.values() for c in members})
        axes.set_xticks(levels, [f"{level:g}" for level in levels])  # 1, 4, 16: not 2^0, 2^2, 2^4
        axes.minorticks_off()
        axes.set_xlabel("concurrency (requests in flight)")
        axes.set_ylabel(f"{title} (ms)")
        axes.set_title(f"{title} p50 (solid) and p99 (dashed)")
        axes.grid(True, alpha=0.3)
    axes_list[0].legend(fontsize="x-small")
    return figure


def speedup_figure(view: RunView) -> Figure | None:
    """Per comparison (a benchmark of a commit), a bar per variant: its speed-up over the baseline with its
    95 % interval; the line at 1 is the baseline."""
    found = [c for c in view.comparisons if c.variants]
    if not found:
        return None
    variants = list(dict.fromkeys(v.variant for c in found for v in c.variants))
    figure, (axes,) = _figure(4.8)
    width = min(0.8 / len(variants), 0.3)  # one comparison must not fill the plot with one slab
    centres = np.arange(len(found))
    for index, name in enumerate(variants):
        rows = [next((v for v in c.variants if v.variant == name), None) for c in found]
        x = [centres[i] + (index - (len(variants) - 1) / 2) * width for i, r in enumerate(rows) if r is not None]
        present = [r for r in rows if r is not None]
        heights = [r.speedup for r in present]
        errors = np.array([[r.speedup - r.low for r in present], [r.high - r.speedup for r in present]])
        axes.bar(x, heights, width * 0.9, yerr=errors, capsize=4, color=COLOURS[index % len(COLOURS)], label=name)
        for xi, r in zip(x, present):
            axes.annotate(f"{r.speedup:.2f}x", (xi, r.high), textcoords="offset points", xytext=(0, 3), ha="center",
                          fontsize="small")
    axes.axhline(1.0, color="black", linestyle="--", linewidth=1, label="baseline")
    labels = [(f"{c.commit}\n" if c.commit else "") + c.baseline_nodeid.split("::", 1)[-1] for c in found]
    axes.set_xticks(centres)
    axes.set_xticklabels(labels, fontsize="small")
    axes.set_xlabel("comparison (commit, benchmark; labelled by its baseline cell)")
    axes.set_ylabel("speed-up over baseline (x), 95% interval")
    axes.set_title("Speed-up per commit and variant")
    axes.set_ylim(0, max(r.high for c in found for r in c.variants) * 1.15)
    axes.set_xlim(-0.6, len(found) - 0.4)
    axes.legend(fontsize="small")
    return figure


def peak_share_figure(cells: Sequence[Cell]) -> Figure | None:
    """Each cell's throughput as a share of its GPU's datasheet peak (compute or memory bandwidth)."""
    rows = [(c, key) for c in cells for key in ("pct_peak_tflops", "pct_peak_gbps") if key in c.values]
    if not rows:
        return None
    rows.sort(key=lambda row: row[0].values[row[1]])
    figure, (axes,) = _figure(_bar_height(len(rows)))
    labels = [f"{c.label} ({'compute' if key == 'pct_peak_tflops' else 'memory'})" for c, key in rows]
    shares = [c.values[key] for c, key in rows]
    colours = [COLOURS[0] if key == "pct_peak_tflops" else COLOURS[1] for _, key in rows]
    axes.barh(labels, shares, color=colours)
    for y, share in enumerate(shares):
        axes.annotate(f"{share:.0f}%", (share, y), textcoords="offset points", xytext=(3, 0), va="center",
                      fontsize="small")
    axes.set_xlim(0, max(100.0, max(shares) * 1.1))
    axes.set_xlabel("% of the datasheet peak")
    axes.legend(handles=[_patch(COLOURS[0], "TFLOP/s of dense compute"), _patch(COLOURS[1], "GB/s of memory")],
                fontsize="small", loc="lower right")
    axes.set_ylabel("cell")
    axes.set_title("Share of the datasheet peak")
    axes.tick_params(axis="y", labelsize="small")
    return figure


def cost_figure(cells: Sequence[Cell]) -> Figure | None:
    """Cells that produce tokens ranked by $ per 1k tokens, cheapest on top; otherwise every priced cell by
    what it cost to run."""
    per_token = [c for c in cells if c.cost.usd_per_1k_tokens is not None]
    if per_token:
        ranked = sorted(per_token, key=lambda c: -(c.cost.usd_per_1k_tokens or 0.0))
        values = [c.cost.usd_per_1k_tokens or 0.0 for c in ranked]
        xlabel, title = "USD per 1,000 output tokens at the measured throughput", "Cost per 1k tokens (cheapest on top)"
    else:
        ranked = sorted((c for c in cells if c.cost.usd is not None), key=lambda c: c.cost.usd or 0.0)
        if not ranked:
            return None
        values = [c.cost.usd or 0.0 for c in ranked]
        xlabel, title = "USD: GPU-seconds x the target's price per GPU-hour", "Cost of each cell (dearest on top)"
    figure, (axes,) = _figure(_bar_height(len(ranked)))
    axes.barh([f"{c.label}" for c in ranked], values, color=COLOURS[0])
    for y, value in enumerate(values):
        axes.annotate(f"${value:.3g}", (value, y), textcoords="offset points", xytext=(3, 0), va="center",
                      fontsize="small")
    axes.set_xlim(0, max(values) * 1.2 if max(values) > 0 else 1)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("cell")
    axes.set_title(title)
    axes.tick_params(axis="y", labelsize="small")
    return figure


def baseline_figure(view: RunView, baseline: RunView, label: str) -> Figure | None:
    """Each cell in both runs: its median's change against the baseline (right: slower, left: faster)."""
    before = baseline.by_nodeid()
    pairs = [(c, before[c.nodeid]) for c in view.cells if c.nodeid in before]
    if not pairs:
        return None
    changes = [(c, 100 * (c.result.summary.median / old.result.summary.median - 1)) for c, old in pairs]
    changes.sort(key=lambda item: item[1])
    figure, (axes,) = _figure(_bar_height(len(changes)))
    values = [change for _, change in changes]
    axes.barh([c.label for c, _ in changes], values, color=[SLOWER if v > 0 else FASTER for v in values])
    for y, value in enumerate(values):
        axes.annotate(f"{value:+.1f}%", (value, y), textcoords="offset points", xytext=(3 if value >= 0 else -3, 0),
                      va="center", ha="left" if value >= 0 else "right", fontsize="small")
    axes.axvline(0, color="black", linewidth=1)
    span = max(1.0, max(abs(v) for v in values) * 1.3)
    axes.set_xlim(-span, span)
    axes.set_xlabel(f"change of the median against {label} (%)")
    axes.legend(handles=[_patch(SLOWER, "slower"), _patch(FASTER, "faster")], fontsize="small", loc="lower right")
    axes.set_ylabel("cell")
    axes.set_title("This run against its baseline")
    axes.tick_params(axis="y", labelsize="small")
    return figure


def plot_makers(view: RunView, baseline: RunView | None, baseline_label: str
                ) -> list[tuple[str, str, str, Callable[[], Figure | None]]]:
    """(file, title, caption, draw) for every plot the report can hold, in the order it shows them."""
    cells = list(view.cells)
    makers: list[tuple[str, str, str, Callable[[], Figure | None]]] = [
        ("latency_cdf.png", "Latency CDF per serving cell",
         "Each serving cell's per-request latencies (its samples: what llm_load recorded), as the share of requests "
         "at or under each value.", lambda: latency_cdf_figure(cells)),
        ("serving_vs_concurrency.png", "TTFT and TPOT against concurrency",
         "Cells that differ only in how many requests were kept in flight, p50 solid and p99 dashed.",
         lambda: concurrency_figure(cells)),
        ("speedups.png", "Speed-up per commit and variant",
         "Baseline time / variant time, with the 95% interval of the speed-up report (over rounds when there are 3 "
         "or more, else a bootstrap over one round's samples).", lambda: speedup_figure(view)),
        ("peak_share.png", "Share of the datasheet peak",
         "Throughput from each cell's declared work and median, against the GPU's datasheet peak.",
         lambda: peak_share_figure(cells)),
        ("cost.png", "Cost ranking",
         "GPU-seconds x the target's price per GPU-hour; per 1k tokens: the price of the time 1,000 output tokens "
         "take at the measured throughput.", lambda: cost_figure(cells)),
    ]
    if baseline is not None:
        makers.append(("run_vs_baseline.png", f"This run against {baseline_label}",
                       "The change of each cell's median against the baseline run.",
                       lambda: baseline_figure(view, baseline, baseline_label)))
    return makers


def draw_plots(view: RunView, folder: Path, baseline: RunView | None = None, baseline_label: str = "the baseline"
               ) -> list[Plot]:
    """Save every plot the run has data for under ``folder``; the caller checks :func:`missing_extra` first."""
    drawn = []
    for file, title, caption, draw in plot_makers(view, baseline, baseline_label):
        figure = draw()
        if figure is None:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        figure.savefig(folder / file, dpi=DPI)
        drawn.append(Plot(f"{folder.name}/{file}", title, caption))
    if drawn:
        # a figure is a web of reference cycles: collect them now, not in the middle of whatever this process
        # measures next (pytester runs, a notebook)
        gc.collect()
    return drawn
