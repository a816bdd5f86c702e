"""The sampler: warm up, then take samples in batches until the median is precise enough or time runs out.

The stopping rule is NVBench's: stop once the relative standard error of the median (``stdrel``) is
under the target, at least ``min_samples`` were taken and ``min_time_s`` has passed; or once
``max_time_s`` of measuring has passed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from .stats import Summary, relative_median_stderr
from .timers import Timer, loops_for

BATCH_SECONDS = 0.05  # check the stopping rule about 20 times a second
# A power-limited kernel (an H200's bf16 matrix product) runs 3-5 % faster in its first half-second than once
# its clocks settle (measured: docs/RESULTS.md); a GPU cell warms up long enough to be timed at sustained clocks.
GPU_WARMUP_S = 1.0
CPU_WARMUP_S = 0.1


@dataclass(frozen=True)
class SamplingPolicy:
    warmup_s: float | None = None  # None: GPU_WARMUP_S on a GPU, CPU_WARMUP_S on the CPU
    max_time_s: float = 3.0
    # After NVBench's min-time: measure for at least this long (wall clock), so a kernel whose clocks fall
    # under sustained load (power-limited matrix products) is not judged by its first burst.
    min_time_s: float = 0.5
    min_samples: int = 10
    max_samples: int = 100_000
    stdrel: float = 0.005


@dataclass(frozen=True)
class Measurement:
    """Raw result of one measurement: ``totals_s[i]`` is the time of ``loops`` back-to-back calls."""

    totals_s: tuple[float, ...]
    loops: int
    timer: str
    cache: str
    warmup_calls: int
    warmup_s: float
    elapsed_s: float
    stop_reason: str
    policy: SamplingPolicy = field(default_factory=SamplingPolicy)

    @cached_property
    def samples_s(self) -> tuple[float, ...]:
        """Seconds per call; the same division pytest-benchmark applies, so both agree to the bit."""
        return tuple(total / self.loops for total in self.totals_s)

    @cached_property
    def summary(self) -> Summary:
        return Summary.of(self.samples_s)


ProgressCallback = Callable[[str, int, float, float], None]  # (phase, samples, elapsed_s, stdrel)


def _batch_size(timer: Timer, wall_per_sample_s: float, limit: int) -> int:
    size = int((timer.batch_s or BATCH_SECONDS) / max(wall_per_sample_s, 1e-9))
    return max(1, min(size, limit))


def measure(
    fn: Callable[[], Any],
    timer: Timer,
    policy: SamplingPolicy,
    progress: ProgressCallback | None = None,
) -> Measurement:
    clock = time.perf_counter
    warmup_target = policy.warmup_s if policy.warmup_s is not None else (CPU_WARMUP_S if timer.on_cpu else GPU_WARMUP_S)
    warm_start = clock()
    per_call = timer.time_batch(fn, 1, 1)[0]  # the first call pays for compilation and allocation
    warmup_calls = 1
    wall_per_call = clock() - warm_start
    while clock() - warm_start < warmup_target:
        size = _batch_size(timer, wall_per_call, timer.batch_limit(1))
        batch_start = clock()
        per_call = float(np.median(timer.time_batch(fn, size, 1)))
        wall_per_call = (clock() - batch_start) / size
        warmup_calls += size
    warmup_s = clock() - warm_start

    loops = loops_for(timer, per_call)
    totals: list[float] = []
    start = clock()
    wall_per_sample = wall_per_call * loops
    stdrel = math.inf
    while True:
        size = _batch_size(timer, wall_per_sample, min(timer.batch_limit(loops), policy.max_samples - len(totals)))
        batch_start = clock()
        totals.extend(timer.time_batch(fn, size, loops))
        wall_per_sample = (clock() - batch_start) / size
        elapsed = clock() - start
        stdrel = relative_median_stderr(totals)
        if progress is not None:
            progress("measure", len(totals), elapsed, stdrel)
        if len(totals) >= policy.min_samples and elapsed >= policy.min_time_s and stdrel <= policy.stdrel:
            reason = f"stdrel {stdrel:.2%} <= {policy.stdrel:.2%} after {len(totals)} samples"
            break
        if elapsed >= policy.max_time_s:
            shown = "n/a" if math.isinf(stdrel) else f"{stdrel:.2%}"
            reason = f"time cap {policy.max_time_s:g} s reached after {len(totals)} samples (stdrel {shown})"
            break
        if len(totals) >= policy.max_samples:
            reason = f"max_samples {policy.max_samples} reached (stdrel {stdrel:.2%})"
            break
    return Measurement(
        totals_s=tuple(totals),
        loops=loops,
        timer=timer.name,
        cache=timer.cache,
        warmup_calls=warmup_calls,
        warmup_s=warmup_s,
        elapsed_s=clock() - start,
        stop_reason=reason,
        policy=policy,
    )
