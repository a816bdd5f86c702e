"""Statistics on raw samples: the median, its standard error, and percentiles."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def median_stderr(samples: Sequence[float] | np.ndarray) -> float:
    """Standard error of the median, distribution-free.

    The rank of the sample median is Binomial(n, 1/2), whose standard deviation is sqrt(n)/2; the values
    at ranks n/2 ± sqrt(n)/2 bracket the median by about one standard error each side. Unlike
    1.2533·σ/√n this holds for the skewed, multi-modal timings that GPUs produce.
    """
    n = len(samples)
    if n < 3:
        return math.inf
    ordered = np.sort(np.asarray(samples, dtype=float))
    centre = (n - 1) / 2
    half_width = math.sqrt(n) / 2
    lo = max(0, math.floor(centre - half_width))
    hi = min(n - 1, math.ceil(centre + half_width))
    return float(ordered[hi] - ordered[lo]) / 2


def relative_median_stderr(samples: Sequence[float] | np.ndarray) -> float:
    med = float(np.median(samples)) if len(samples) else 0.0
    if med <= 0:
        return math.inf
    return median_stderr(samples) / med


@dataclass(frozen=True)
class Summary:
    count: int
    median: float
    mean: float
    stddev: float
    min: float
    max: float
    p90: float
    p95: float
    p99: float
    stdrel: float  # relative standard error of the median

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        data = np.asarray(samples, dtype=float)
        if data.size == 0:
            raise ValueError("no samples to summarise")
        p90, p95, p99 = np.percentile(data, [90, 95, 99])
        return cls(
            count=int(data.size),
            median=float(np.median(data)),
            mean=float(data.mean()),
            stddev=float(data.std(ddof=1)) if data.size > 1 else 0.0,
            min=float(data.min()),
            max=float(data.max()),
            p90=float(p90),
            p95=float(p95),
            p99=float(p99),
            stdrel=relative_median_stderr(data),
        )


def format_seconds(value: float) -> str:
    """1.234e-3 -> '1.234 ms': four significant digits in the largest unit that keeps the value >= 1."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if value >= scale:
            return f"{value / scale:.4g} {unit}"
    return f"{value * 1e9:.4g} ns"
