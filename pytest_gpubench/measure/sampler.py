"""The sampler: warm up until the figure is steady, then take samples in batches until the median is precise
enough or time runs out.

Warm-up is adaptive: it runs the call in short batches and stops once the median of the newest batches has
stopped moving against the batches before them (a clock ramping up, a power-limited kernel slowing as it
heats), or at a cap. A device that the previous cell kept busy a moment ago is already at its working
clocks, so it needs fewer batches to show it is steady. A fixed ``warmup_s`` (the user's choice) is kept as
given. Either starts after the first call, which compiles and allocates; the record keeps that call's time apart
(``first_call_s``).

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
from .steady import STEP_S, WARM_GAP_S, run_until_steady
from .timers import Timer, loops_for

BATCH_SECONDS = STEP_S  # check the stopping rule about 20 times a second
# Warm-up runs until the figure stops moving (steady.py), up to these caps after the first call.
GPU_WARMUP_S = 1.0
CPU_WARMUP_S = 0.1


class DeviceWarmth:
    """When each device was last kept busy by a cell of this process: the warm state one cell hands the next.
    Keyed by whatever names the device (its UUID where the timer knows it)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._busy_until: dict[str, float] = {}
        self._clock = clock

    def is_warm(self, device: str) -> bool:
        last = self._busy_until.get(device)
        return last is not None and self._clock() - last <= WARM_GAP_S

    def mark_busy(self, device: str) -> None:
        self._busy_until[device] = self._clock()


@dataclass(frozen=True)
class SamplingPolicy:
    warmup_s: float | None = None  # None: adaptive, up to GPU_WARMUP_S on a GPU, CPU_WARMUP_S on the CPU
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
    warmup_stop: str = ""
    first_call_s: float = 0.0  # of warmup_s: the first call, which compiles and allocates (the test's cost)

    @cached_property
    def samples_s(self) -> tuple[float, ...]:
        """Seconds per call; the same division pytest-benchmark applies, so both agree to the bit."""
        return tuple(total / self.loops for total in self.totals_s)

    @cached_property
    def summary(self) -> Summary:
        return Summary.of(self.samples_s)


ProgressCallback = Callable[[str, int, float, float], None]  # (phase, samples, elapsed_s, stdrel)


def _batch_size(timer: Timer, wall_per_sample_s: float, limit: int) -> int:
    size = int((timer.batch_s or BATCH_SECONDS) / max(timer.sample_seconds(wall_per_sample_s), 1e-9))
    return max(1, min(size, limit))


@dataclass(frozen=True)
class WarmUp:
    per_call_s: float  # the newest estimate of one call's time, which sizes the measurement's samples
    wall_per_call_s: float
    calls: int
    seconds: float
    stop: str  # why it ended, for the cell's record
    first_call_s: float  # the first call's wall time, compilation and allocation included


def _warm_up(fn: Callable[[], Any], timer: Timer, policy: SamplingPolicy, warm_device: bool) -> WarmUp:
    clock = time.perf_counter
    start = clock()
    per_call = timer.time_batch(fn, 1, 1)[0]  # the first call pays for compilation and allocation
    calls = 1
    wall_per_call = first_call_s = clock() - start
    # The warm-up proper starts after the first call: a call that compiles for seconds (jit, torch.compile,
    # cuBLAS's first handle) keeps the host busy, not the device, and must not use up the warm-up's time.
    begin = clock()

    def done(stop: str) -> WarmUp:
        return WarmUp(per_call, wall_per_call, calls, clock() - start, stop, first_call_s)

    def step() -> float:
        nonlocal per_call, wall_per_call, calls
        size = _batch_size(timer, wall_per_call, timer.batch_limit(1))
        batch_start = clock()
        per_call = float(np.median(timer.time_batch(fn, size, 1)))
        wall_per_call = (clock() - batch_start) / size
        calls += size
        return per_call

    if policy.warmup_s is not None:  # the user's fixed warm-up
        while clock() - begin < policy.warmup_s:
            step()
        return done(f"fixed {policy.warmup_s:g} s")
    if timer.settles_itself:
        return done("first call only: the timer settles the device itself before every batch")
    settled = run_until_steady(step, warm=warm_device, cap_s=CPU_WARMUP_S if timer.on_cpu else GPU_WARMUP_S,
                               on_cpu=timer.on_cpu, clock=clock)
    return done(settled.stop)


def measure(
    fn: Callable[[], Any],
    timer: Timer,
    policy: SamplingPolicy,
    progress: ProgressCallback | None = None,
    warmth: DeviceWarmth | None = None,
    device: str = "",
) -> Measurement:
    """Warm ``fn`` up, then sample it. ``warmth`` says whether ``device`` was busy a moment ago (and learns
    that it is busy now), so that a run's cells on one device do not each start from a rested one."""
    clock = time.perf_counter
    warm_device = warmth is not None and warmth.is_warm(device)
    warm = _warm_up(fn, timer, policy, warm_device)
    loops = loops_for(timer, warm.per_call_s)
    totals: list[float] = []
    start = clock()
    wall_per_sample = warm.wall_per_call_s * loops
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
    if warmth is not None:
        warmth.mark_busy(device)
    return Measurement(
        totals_s=tuple(totals),
        loops=loops,
        timer=timer.name,
        cache=timer.cache,
        warmup_calls=warm.calls,
        warmup_s=warm.seconds,
        elapsed_s=clock() - start,
        stop_reason=reason,
        policy=policy,
        warmup_stop=f"{warm.stop}; the last batch's lead-in: {timer.lead_in_stop}" if timer.lead_in_stop
        else warm.stop,
        first_call_s=warm.first_call_s,
    )
