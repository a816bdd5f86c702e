"""The regression gate: a cell regresses only if it is slower by more than the threshold AND the difference
is significant on the raw samples (one-sided Mann-Whitney U, as asv decides), against a saved baseline.

A threshold alone flags noise on a noisy cell; significance alone flags a 0.1 % shift measured a million
times. Both together flag what a person would call a regression.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .measure.stats import format_seconds

MIN_SAMPLES_FOR_SIGNIFICANCE = 5


def mann_whitney_greater(new: Sequence[float], old: Sequence[float]) -> float:
    """One-sided p-value that ``new`` tends to be larger than ``old``.

    Normal approximation with tie and continuity corrections, as scipy's ``mannwhitneyu(...,
    alternative="greater", method="asymptotic")``; sound from about five samples a side.
    """
    x = np.asarray(new, dtype=float)
    y = np.asarray(old, dtype=float)
    n1, n2 = x.size, y.size
    if n1 == 0 or n2 == 0:
        return 1.0
    combined = np.concatenate([x, y])
    order = np.argsort(combined, kind="mergesort")
    ranks = np.empty(combined.size, dtype=float)
    sorted_values = combined[order]
    # average ranks over ties
    boundaries = np.flatnonzero(np.diff(sorted_values)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [combined.size]])
    tie_term = 0.0
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2  # 1-based average rank
        t = end - start
        tie_term += t**3 - t
    u1 = ranks[:n1].sum() - n1 * (n1 + 1) / 2
    n = n1 + n2
    variance = n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1)))
    if variance <= 0:
        return 1.0  # every sample equal: no evidence either way
    z = (u1 - n1 * n2 / 2 - 0.5) / math.sqrt(variance)
    return 0.5 * math.erfc(z / math.sqrt(2))


@dataclass(frozen=True)
class GatePolicy:
    threshold: float  # fraction: 0.05 is "5 % slower"
    alpha: float = 0.01


@dataclass(frozen=True)
class Verdict:
    """The gate's word on one cell. ``outcome`` is one of OUTCOMES."""

    fullname: str
    outcome: str
    old_median: float | None = None
    new_median: float | None = None
    p_value: float | None = None
    baseline: str | None = None
    note: str = ""

    @property
    def change(self) -> float | None:
        if self.old_median is None or self.new_median is None or self.old_median <= 0:
            return None
        return self.new_median / self.old_median - 1

    @property
    def failed(self) -> bool:
        return self.outcome == "regressed"

    def describe(self) -> str:
        """One line: what moved, by how much, how sure, against what."""
        if self.outcome in ("regressed", "slower-not-significant", "faster", "unchanged"):
            assert self.old_median is not None and self.new_median is not None and self.change is not None
            p = "n/a" if self.p_value is None else f"{self.p_value:.2g}"
            return (f"{self.outcome}: median {format_seconds(self.old_median)} -> {format_seconds(self.new_median)} "
                    f"({self.change:+.2%}), Mann-Whitney p={p}, baseline {self.baseline}{self.note}")
        return f"{self.outcome}: {self.note}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "fullname": self.fullname, "outcome": self.outcome, "old_median": self.old_median,
            "new_median": self.new_median, "p_value": self.p_value, "baseline": self.baseline, "note": self.note,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        return cls(**{k: data[k] for k in ("fullname", "outcome", "old_median", "new_median", "p_value", "baseline", "note")})


# outcome -> what it means, shown in the CI summary's legend and in the README
OUTCOMES: dict[str, str] = {
    "regressed": "slower by more than the threshold and significant: the cell fails",
    "slower-not-significant": "slower by more than the threshold, but not significant on the raw samples: passes",
    "unchanged": "within the threshold: passes",
    "faster": "faster by more than the threshold: passes",
    "no-baseline": "no saved run to compare against (first CI run): passes; save one with --benchmark-autosave",
    "new": "this cell is not in the baseline: passes, and is saved for next time",
    "different-hardware": "the baseline was measured on other hardware: not gated, passes",
    "too-few-samples": f"fewer than {MIN_SAMPLES_FOR_SIGNIFICANCE} raw samples on a side: significance cannot be shown: passes",
    "failed": "the cell itself failed in this run (a new failure if the baseline has it)",
    "missing": "in the baseline but not run now (deselected, skipped or removed): not gated",
}


def judge(fullname: str, new: Sequence[float], old: Sequence[float], policy: GatePolicy, baseline: str) -> Verdict:
    new_median = float(np.median(new))
    old_median = float(np.median(old))
    if min(len(new), len(old)) < MIN_SAMPLES_FOR_SIGNIFICANCE:
        return Verdict(fullname, "too-few-samples", old_median, new_median, None, baseline,
                       f"{len(old)} baseline and {len(new)} new samples")
    change = new_median / old_median - 1 if old_median > 0 else 0.0
    if change > policy.threshold:
        p_value = mann_whitney_greater(new, old)
        outcome = "regressed" if p_value < policy.alpha else "slower-not-significant"
        note = f" (threshold {policy.threshold:.2%}, alpha {policy.alpha:g})"
        return Verdict(fullname, outcome, old_median, new_median, p_value, baseline, note)
    outcome = "faster" if change < -policy.threshold else "unchanged"
    return Verdict(fullname, outcome, old_median, new_median, None, baseline, "")

