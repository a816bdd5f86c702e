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
    runs: int = 3  # saved runs a cell is judged against: the newest and those before it


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
    test: str = "Mann-Whitney"  # the significance test p_value comes from

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
        if self.outcome in ("regressed", "slower-not-significant", "faster", "unchanged", "unstable"):
            assert self.old_median is not None and self.new_median is not None and self.change is not None
            p = "n/a" if self.p_value is None else f"{self.p_value:.2g}"
            return (f"{self.outcome}: median {format_seconds(self.old_median)} -> {format_seconds(self.new_median)} "
                    f"({self.change:+.2%}), {self.test} p={p}, baseline {self.baseline}{self.note}")
        return f"{self.outcome}: {self.note}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "fullname": self.fullname, "outcome": self.outcome, "old_median": self.old_median,
            "new_median": self.new_median, "p_value": self.p_value, "baseline": self.baseline, "note": self.note,
            "test": self.test,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        return cls(**{k: data[k] for k in ("fullname", "outcome", "old_median", "new_median", "p_value", "baseline", "note",
                                           "test") if k in data})


# outcome -> what it means, shown in the CI summary's legend and in the README
OUTCOMES: dict[str, str] = {
    "regressed": "slower by more than the threshold and significant: the cell fails",
    "slower-not-significant": "slower by more than the threshold, but not significant on the raw samples: passes",
    "unchanged": "within the threshold: passes",
    "faster": "faster by more than the threshold: passes",
    "no-baseline": "no saved run to compare against (first CI run): passes; save one with --benchmark-autosave",
    "new": "this cell is not in the baseline: passes, and is saved for next time",
    "different-hardware": "the baseline was measured on other hardware: not gated, passes",
    "unstable": "slower than every saved run by more than the threshold, but its saved runs disagree by more than "
                "twice the threshold, or the middle half of its rounds now by more than 1.5 times it: noise that "
                "size hides the change; not judged, passes, listed with its figures",
    "too-few-samples": f"fewer than {MIN_SAMPLES_FOR_SIGNIFICANCE} raw samples on a side: significance cannot be shown: passes",
    "failed": "the cell itself failed in this run (a new failure if the baseline has it)",
    "missing": "in the baseline but not run now (deselected, skipped or removed): not gated",
}


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (Lentz's method)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-14:
            break
    return h


def regularized_beta(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def student_t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * regularized_beta(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def welch_greater(new: Sequence[float] | np.ndarray, old: Sequence[float] | np.ndarray) -> float:
    """One-sided p-value that ``new``'s mean exceeds ``old``'s (Welch's t-test, unequal variances)."""
    x, y = np.asarray(new, dtype=float), np.asarray(old, dtype=float)
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    if vx + vy <= 0:
        return 0.0 if x.mean() > y.mean() else 1.0
    t = (x.mean() - y.mean()) / math.sqrt(vx + vy)
    df = (vx + vy) ** 2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1))
    return student_t_sf(t, df)


@dataclass(frozen=True)
class History:
    """What the saved runs say about one cell, newest run first: each run's median, every round's median
    (a run without rounds counts as one round), and the newest run's raw samples."""

    labels: tuple[str, ...]
    run_medians: tuple[float, ...]
    round_medians: tuple[float, ...]
    samples: tuple[float, ...]


UNSTABLE_SPREAD = 2.0  # in thresholds: saved runs of one cell that disagree by more cannot be gated
# in thresholds: the middle half of this run's rounds spanning more says the cell is too noisy now; a Python
# loop's rounds on a quiet 2-core VM span up to 11 %, so at a 10 % threshold 1.0 called real slowdowns noise
UNSTABLE_ROUNDS_SPREAD = 1.5


def judge(fullname: str, new: Sequence[float], new_rounds: Sequence[float], history: History,
          policy: GatePolicy, resolution_s: float = 0.0) -> Verdict:
    """A regression is slower than *every* saved run by more than the threshold, and significantly so:
    across rounds (Welch's t on the logarithms of round medians) when both sides have at least two, else
    on the raw samples of the newest run (Mann-Whitney U, evidence from within one run only). A cell whose
    saved runs, or whose rounds now, disagree by more than twice the threshold is ``unstable``."""
    label = history.labels[0]
    new_median = float(np.median(new))
    old_median = history.run_medians[0]
    if min(len(new), len(history.samples)) < MIN_SAMPLES_FOR_SIGNIFICANCE:
        return Verdict(fullname, "too-few-samples", old_median, new_median, None, label,
                       f"{len(history.samples)} baseline and {len(new)} new samples")
    slowest, fastest = max(history.run_medians), min(history.run_medians)
    if new_median - slowest <= resolution_s:  # a 16-element add: 4.10 -> 4.32 us is under CUDA events' 0.5 us
        return Verdict(fullname, "unchanged", old_median, new_median, None, label,
                       f" (within the timer's resolution, {format_seconds(resolution_s)} a call)")
    if new_median <= slowest * (1 + policy.threshold):
        outcome = "faster" if new_median < fastest * (1 - policy.threshold) else "unchanged"
        return Verdict(fullname, outcome, old_median, new_median, None, label, "")
    runs = len(history.run_medians)
    across_rounds = len(new_rounds) >= 2 and len(history.round_medians) >= 2
    if across_rounds:
        test = "Welch"
        p_value = welch_greater(np.log(new_rounds), np.log(history.round_medians))
        evidence = (f"{len(new_rounds)} rounds against {len(history.round_medians)} of {runs} "
                    f"run{'s' if runs != 1 else ''}")
    else:
        test = "Mann-Whitney"
        p_value = mann_whitney_greater(new, history.samples)
        evidence = "raw samples of one run each; --gpubench-rounds gives evidence across runs"
    note = f" (threshold {policy.threshold:.2%}, alpha {policy.alpha:g}; evidence: {evidence})"
    # the middle half of this run's rounds, and the whole range of the saved runs' medians
    low_q, high_q = np.percentile(new_rounds, [25, 75]) if len(new_rounds) >= 2 else (1.0, 1.0)
    spread_now = float(high_q / low_q - 1)
    spread_before = slowest / fastest - 1 if runs >= 2 else 0.0
    limit = UNSTABLE_SPREAD * policy.threshold
    rounds_limit = UNSTABLE_ROUNDS_SPREAD * policy.threshold
    if spread_now > rounds_limit or spread_before > limit:
        what = (f"its {runs} saved runs range {format_seconds(fastest)}..{format_seconds(slowest)}, more than "
                f"{limit:.0%} apart" if spread_before > limit else
                f"the middle half of its rounds now spans {format_seconds(float(low_q))}..{format_seconds(float(high_q))}, "
                f"more than {rounds_limit:.0%}")
        return Verdict(fullname, "unstable", old_median, new_median, p_value, label,
                       f" ({what}: a {policy.threshold:.0%} change cannot be told from noise)", test)
    outcome = "regressed" if p_value < policy.alpha else "slower-not-significant"
    return Verdict(fullname, outcome, old_median, new_median, p_value, label, note, test)
