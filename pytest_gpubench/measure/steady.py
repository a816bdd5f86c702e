"""When a figure has stopped moving: the rule that ends a warm-up (the sampler's, before a cell's samples) and a
lead-in (JAX's device timer's, before each batch it traces).

A power-limited kernel (an H200's bf16 matrix product) runs 3-5 % faster in its first half-second than once its
clocks settle (measured: docs/RESULTS.md). Work is run in short steps until the median of the newest WINDOW
steps is within DRIFT of the median of the WINDOW steps before them, or until a cap. Comparing two windows, not
neighbouring steps, catches a slow slide: the matmul's 5 % over 0.7 s is 0.35 % a 50 ms step, under any per-step
tolerance, but 1 % between windows 150 ms apart.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

STEP_S = 0.05  # one step of warm-up: about 20 checks a second
DRIFT = 0.005
COLD_WINDOW = 3
# A device busy until just before (the previous cell's work, the previous batch) has its clocks up: 2 steps
# against 2 suffice to show the new kernel is steady; one that rested longer than WARM_GAP_S starts over.
WARM_WINDOW = 2
WARM_GAP_S = 0.5
# A rested GPU ramps its clocks and fills its caches for its first tens of milliseconds whatever the kernel.
COLD_MIN_S = 0.1


@dataclass(frozen=True)
class Settled:
    steps: int
    seconds: float
    stop: str  # why it ended, in words for the cell's record


def run_until_steady(step: Callable[[], float], *, warm: bool, cap_s: float, on_cpu: bool = False,
                     clock: Callable[[], float] = time.perf_counter) -> Settled:
    """Call ``step`` (runs some work, returns its time per call) until the figure is steady or ``cap_s`` has
    passed. ``warm``: the device was busy a moment ago, so a shorter window shows it is steady."""
    window = WARM_WINDOW if warm else COLD_WINDOW
    minimum = 0.0 if (warm or on_cpu) else COLD_MIN_S
    begin = clock()
    medians: list[float] = []
    drift = math.inf
    while True:
        elapsed = clock() - begin
        if len(medians) >= 2 * window and elapsed >= minimum:
            newest, before = float(np.median(medians[-window:])), float(np.median(medians[-2 * window:-window]))
            drift = newest / before - 1 if before > 0 else math.inf
            if abs(drift) <= DRIFT:
                state = "warm device" if warm else "rested device"
                return Settled(len(medians), elapsed,
                               f"steady after {len(medians)} batches, {elapsed:.2f} s ({state}): the newest {window} "
                               f"batches {drift:+.2%} from the {window} before")
        if elapsed >= cap_s:
            shown = f"too few to judge ({2 * window} needed)" if math.isinf(drift) else f"still moving {drift:+.2%}"
            return Settled(len(medians), elapsed, f"cap {cap_s:g} s reached after {len(medians)} batches, {shown}")
        medians.append(step())
