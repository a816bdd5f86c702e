"""Speed-ups over the baseline variant: per comparison (one benchmark, commit and target), each variant's
median and its speed-up with a 95 % interval; over all comparisons, per variant, how many improved,
regressed or stayed, and the geometric-mean speed-up (the 3-way tables of baseline / human / agent).

Evidence, best first:

- rounds (``--gpubench-rounds``, at least 3 on each side): the speed-up is the geometric mean of the
  per-round ratios, round *k* of the baseline against round *k* of the variant, and the interval a
  t-interval on their logarithms. Rounds are separately set up and warmed, and interleaved they cancel
  drift, so this interval speaks for the next run, not only this one;
- one round: the ratio of medians, and a bootstrap interval over the raw samples — which share the
  round's clocks and co-tenants, so it is narrower than what a rerun would show. The report says which.

A variant *improved* when its whole interval lies above 1 and it is at least ``MIN_EFFECT`` faster,
*regressed* in the mirror case, and is *unchanged* otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..measure.stats import format_seconds
from ..record import CellRecord

MIN_EFFECT = 0.02
MIN_ROUNDS_FOR_T = 3
BOOTSTRAP_RESAMPLES = 2000
# two-sided 95 % quantiles of Student's t, by degrees of freedom; past 30, the normal's 1.96 plus a
# first-order correction is within 0.1 % of the exact value
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    return _T975[df - 1] if df <= len(_T975) else 1.96 + 2.4 / df


@dataclass(frozen=True)
class SpeedUp:
    variant: str
    nodeid: str
    median_s: float
    speedup: float  # baseline time / variant time: above 1 is faster
    low: float
    high: float
    evidence: str  # "N rounds" or "samples of one round"
    verdict: str  # improved | regressed | unchanged


@dataclass(frozen=True)
class Comparison:
    key: str
    commit: str | None
    baseline_variant: str
    baseline_nodeid: str
    baseline_median_s: float
    variants: tuple[SpeedUp, ...]


def _round_medians(record: CellRecord) -> list[float]:
    return [float(x) for x in record.details.get("round_medians_s", [])]


def speedup_of(baseline: CellRecord, variant: CellRecord, seed: int = 0) -> tuple[float, float, float, str]:
    """(speed-up, low, high, evidence) of ``variant`` over ``baseline``."""
    old_rounds, new_rounds = _round_medians(baseline), _round_medians(variant)
    n = min(len(old_rounds), len(new_rounds))
    if n >= MIN_ROUNDS_FOR_T:
        logs = np.log(np.asarray(old_rounds[:n]) / np.asarray(new_rounds[:n]))
        mean = float(logs.mean())
        half = t975(n - 1) * float(logs.std(ddof=1)) / math.sqrt(n)
        return math.exp(mean), math.exp(mean - half), math.exp(mean + half), f"{n} rounds"
    old = np.asarray(baseline.samples_s)
    new = np.asarray(variant.samples_s)
    point = float(np.median(old) / np.median(new))
    rng = np.random.default_rng(seed)
    old_medians = np.median(rng.choice(old, size=(BOOTSTRAP_RESAMPLES, old.size)), axis=1)
    new_medians = np.median(rng.choice(new, size=(BOOTSTRAP_RESAMPLES, new.size)), axis=1)
    low, high = np.percentile(old_medians / new_medians, [2.5, 97.5])
    return point, float(low), float(high), "samples of one round"


def verdict_of(speedup: float, low: float, high: float) -> str:
    if low > 1 and speedup >= 1 + MIN_EFFECT:
        return "improved"
    if high < 1 and speedup <= 1 / (1 + MIN_EFFECT):
        return "regressed"
    return "unchanged"


def comparisons(records: Sequence[CellRecord]) -> list[Comparison]:
    groups: dict[str, list[CellRecord]] = {}
    for record in records:
        key = record.details.get("comparison")
        if key and record.details.get("baseline_variant"):
            groups.setdefault(key, []).append(record)
    out = []
    for key, members in groups.items():
        baseline_name = members[0].details["baseline_variant"]
        baseline = next((m for m in members if m.details.get("variant") == baseline_name), None)
        if baseline is None or not baseline.totals_s:
            continue  # the baseline failed or was not selected: nothing to compare against
        rows = []
        for member in members:
            if member is baseline:
                continue
            speedup, low, high, evidence = speedup_of(baseline, member)
            rows.append(SpeedUp(member.details["variant"], member.nodeid, float(np.median(member.samples_s)),
                                speedup, low, high, evidence, verdict_of(speedup, low, high)))
        out.append(Comparison(key, baseline.details.get("commit"), baseline_name, baseline.nodeid,
                              float(np.median(baseline.samples_s)), tuple(rows)))
    return out


def totals(found: Sequence[Comparison]) -> dict[str, dict[str, Any]]:
    """Per variant, over every comparison: counts by verdict and the geometric-mean speed-up."""
    by_variant: dict[str, list[SpeedUp]] = {}
    for comparison in found:
        for row in comparison.variants:
            by_variant.setdefault(row.variant, []).append(row)
    out = {}
    for name, rows in by_variant.items():
        out[name] = {
            "comparisons": len(rows),
            "improved": sum(r.verdict == "improved" for r in rows),
            "regressed": sum(r.verdict == "regressed" for r in rows),
            "unchanged": sum(r.verdict == "unchanged" for r in rows),
            "geomean_speedup": math.exp(sum(math.log(r.speedup) for r in rows) / len(rows)),
        }
    return out


def speedup_json(records: Sequence[CellRecord]) -> dict[str, Any]:
    found = comparisons(records)
    return {"min_effect": MIN_EFFECT, "comparisons": [asdict(c) for c in found], "totals": totals(found)}


def speedup_lines(records: Sequence[CellRecord]) -> list[str]:
    found = comparisons(records)
    if not found:
        return []
    header = ["comparison", "variant", "median", "speed-up", "95% interval", "verdict", "evidence"]
    rows: list[list[str]] = []
    for c in sorted(found, key=lambda c: (c.commit or "", c.key)):
        label = c.baseline_nodeid.split("::", 1)[-1]
        rows.append([label, c.baseline_variant + " (baseline)", format_seconds(c.baseline_median_s), "1", "", "", ""])
        for r in c.variants:
            rows.append(["", r.variant, format_seconds(r.median_s), f"{r.speedup:.3f}x", f"[{r.low:.3f}, {r.high:.3f}]",
                         r.verdict, r.evidence])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    return lines + totals_lines(found)


def totals_lines(found: Sequence[Comparison]) -> list[str]:
    """One line per variant: how many comparisons it improved, regressed or left, and its geometric mean."""
    lines = []
    commits = len({c.commit for c in found if c.commit and c.variants})
    scope = f"{commits} commit{'s' if commits != 1 else ''}, " if commits else ""
    for name, t in totals(found).items():
        lines.append(f"{name}: over {scope}{t['comparisons']} comparison{'s' if t['comparisons'] != 1 else ''}: "
                     f"{t['improved']} improved, {t['regressed']} regressed, {t['unchanged']} unchanged; "
                     f"geometric-mean speed-up {t['geomean_speedup']:.3f}x")
    return lines
