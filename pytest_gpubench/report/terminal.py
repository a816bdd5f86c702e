"""The terminal summary: one row per cell with its median, precision, and throughput."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from ..gate import Verdict
from ..measure.stats import format_seconds
from ..record import CellResult

RATE_COLUMNS = (
    ("tflops", "TFLOP/s"),
    ("pct_peak_tflops", "%peak"),
    ("gbps", "GB/s"),
    ("pct_peak_gbps", "%peak BW"),
    ("tokens_per_s", "tok/s"),
    ("items_per_s", "items/s"),
    # serving cells (llm_load)
    ("ttft_p99_ms", "TTFT p99 ms"),
    ("tpot_median_ms", "TPOT ms"),
    ("itl_median_ms", "ITL ms"),
    ("output_token_throughput", "out tok/s"),
    ("goodput", "goodput req/s"),
    ("failed", "failed req"),
)


def _rate(value: float) -> str:
    return f"{value:.4g}" if value < 1e6 else f"{value:.3e}"


def summary_lines(results: Sequence[CellResult]) -> list[str]:
    used = [(key, title) for key, title in RATE_COLUMNS if any(key in r.metrics for r in results)]
    show_work = len({r.work for r in results}) > 1  # only where cells do different amounts of work
    header = ["cell", "median", "stdrel", "samples", "timer", *(["work"] if show_work else []),
              *(title for _, title in used), "stopped because"]
    rows = []
    for r in results:
        rows.append(
            [
                ("! " if r.flags else "") + r.nodeid.split("::", 1)[-1],
                format_seconds(r.summary.median),
                f"{r.summary.stdrel:.2%}" if r.summary.stdrel != float("inf") else "n/a",
                str(r.summary.count if r.loops == 1 else f"{r.summary.count}x{r.loops}"),
                f"{r.timer}/{r.cache}",
                *([r.work or "-"] if show_work else []),
                *(_rate(r.metrics[key]) if key in r.metrics else "-" for key, _ in used),
                "; ".join([r.stop_reason, *r.flags]),
            ]
        )
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(header, widths)).rstrip()]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    flagged = sum(bool(r.flags) for r in results)
    if flagged:
        lines.append(f"! {flagged} cell{'s' if flagged != 1 else ''} stopped noisier than the stdrel target or with "
                     "fewer samples than the minimum: read their figures with care (--gpubench-max-time gives them longer)")
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
