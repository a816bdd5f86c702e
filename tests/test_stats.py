"""Statistics on samples, and the sampler's stopping rule driven by a scripted timer."""

from __future__ import annotations

import time

import json
import math
from pathlib import Path
from collections.abc import Callable, Iterator
from itertools import cycle
from typing import Any

import numpy as np
import pytest

from pytest_gpubench.measure.sampler import SamplingPolicy, measure
from pytest_gpubench.measure.stats import Summary, median_stderr, relative_median_stderr
from pytest_gpubench.measure.timers import Timer

# --- stats ---------------------------------------------------------------------------------------


def test_median_stderr_shrinks_like_one_over_root_n() -> None:
    rng = np.random.default_rng(20240611)
    small = [median_stderr(rng.normal(1.0, 0.1, 100)) for _ in range(50)]
    large = [median_stderr(rng.normal(1.0, 0.1, 10_000)) for _ in range(50)]
    ratio = float(np.mean(small) / np.mean(large))
    assert 7 < ratio < 14  # sqrt(10_000 / 100) = 10
    # and it is near the textbook figure for normal samples, 1.2533 σ / √n
    assert float(np.mean(large)) == pytest.approx(1.2533 * 0.1 / math.sqrt(10_000), rel=0.3)


@pytest.mark.parametrize("samples", [[], [1.0], [1.0, 2.0]])
def test_median_stderr_is_infinite_below_three_samples(samples: list[float]) -> None:
    assert median_stderr(samples) == math.inf
    assert relative_median_stderr(samples) == math.inf


def test_median_stderr_of_constant_samples_is_zero() -> None:
    assert median_stderr([0.5] * 20) == 0.0
    assert relative_median_stderr([0.5] * 20) == 0.0


def test_relative_median_stderr_with_zero_median_is_infinite() -> None:
    assert relative_median_stderr([0.0] * 10) == math.inf


def test_summary_of_samples() -> None:
    rng = np.random.default_rng(7)
    samples = list(rng.lognormal(-7.0, 0.5, 1000))
    s = Summary.of(samples)
    assert s.count == 1000
    assert s.min <= s.median <= s.p90 <= s.p95 <= s.p99 <= s.max
    assert s.p90 < s.p95 < s.p99  # strictly, for a continuous distribution
    assert s.min == min(samples) and s.max == max(samples)
    assert s.median == pytest.approx(float(np.median(samples)))
    assert s.mean == pytest.approx(sum(samples) / 1000)
    assert s.stddev == pytest.approx(float(np.std(samples, ddof=1)))
    assert s.stdrel == pytest.approx(median_stderr(samples) / s.median)


def test_summary_of_one_sample() -> None:
    s = Summary.of([0.25])
    assert (s.count, s.median, s.mean, s.stddev, s.min, s.max, s.p99) == (1, 0.25, 0.25, 0.0, 0.25, 0.25, 0.25)
    assert s.stdrel == math.inf


def test_summary_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no samples"):
        Summary.of([])


# --- the sampler ---------------------------------------------------------------------------------


class ScriptedTimer(Timer):
    """Returns the scripted durations, one per call, instead of timing anything; one sample a batch."""

    name = "scripted"
    max_batch = 1

    def __init__(self, per_call: Callable[[], float]) -> None:
        super().__init__("hot")
        self._per_call = per_call
        self.calls = 0

    def time_batch(self, fn: Callable[[], Any], count: int, loops: int) -> list[float]:
        totals = []
        for _ in range(count):
            self.calls += loops
            totals.append(sum(self._per_call() for _ in range(loops)))
        return totals


def _noop() -> None:
    return None


def test_constant_samples_stop_on_stdrel_once_min_samples_and_min_time_are_met() -> None:
    # min_time is wall clock (the GPU's state evolves with time, not with samples): each scripted sample
    # takes 10 ms of real time, so 0.2 s of measuring needs about 20 samples, more than min_samples
    def sample() -> float:
        time.sleep(0.01)
        return 0.125

    timer = ScriptedTimer(sample)
    policy = SamplingPolicy(warmup_s=0.001, max_time_s=60.0, min_time_s=0.2, min_samples=3, stdrel=0.005)
    m = measure(_noop, timer, policy)
    assert m.elapsed_s >= 0.2
    assert 10 <= len(m.totals_s) <= 21
    assert set(m.totals_s) == {0.125}
    assert m.loops == 1
    assert m.stop_reason == f"stdrel 0.00% <= 0.50% after {len(m.totals_s)} samples"
    assert m.summary.median == 0.125
    assert m.timer == "scripted"
    assert m.elapsed_s < 10.0  # stopped on the rule, not the (60 s) cap


def test_constant_samples_wait_for_min_samples() -> None:
    timer = ScriptedTimer(lambda: 0.125)
    policy = SamplingPolicy(warmup_s=0.001, max_time_s=60.0, min_time_s=0.0, min_samples=25, stdrel=0.005)
    m = measure(_noop, timer, policy)
    assert len(m.totals_s) == 25
    assert m.stop_reason == "stdrel 0.00% <= 0.50% after 25 samples"


def test_noisy_samples_stop_at_the_time_cap() -> None:
    # alternating 1 ms / 2 ms: the median's stderr stays a quarter of it or more, however many samples are taken
    alternating: Iterator[float] = cycle([1e-3, 2e-3])
    timer = ScriptedTimer(lambda: next(alternating))
    policy = SamplingPolicy(warmup_s=0.001, max_time_s=0.2, min_time_s=0.01, min_samples=5, stdrel=0.005)
    m = measure(_noop, timer, policy)
    assert m.elapsed_s >= 0.2
    assert m.stop_reason.startswith("time cap 0.2 s reached after ")
    stdrel = relative_median_stderr(m.totals_s)
    assert stdrel >= 0.25  # 0.5 ms around a median of 1.5 ms (even count), 1 ms or 2 ms (odd count)
    assert m.stop_reason.endswith(f" {len(m.totals_s)} samples (stdrel {stdrel:.2%})")
    assert len(m.totals_s) > 5
    assert set(m.totals_s) == {1e-3, 2e-3}


def test_max_samples_stops_a_noisy_measurement() -> None:
    alternating: Iterator[float] = cycle([1e-3, 2e-3])
    timer = ScriptedTimer(lambda: next(alternating))
    policy = SamplingPolicy(warmup_s=0.001, max_time_s=60.0, min_time_s=0.01, min_samples=5, max_samples=40)
    m = measure(_noop, timer, policy)
    assert len(m.totals_s) == 40
    assert m.stop_reason == "max_samples 40 reached (stdrel 33.33%)"


def test_loops_group_short_calls_into_samples_and_samples_are_per_call() -> None:
    class GroupingTimer(ScriptedTimer):
        min_sample_s = 1e-3  # a sample must last 1 ms: 4 calls of 0.25 ms

    timer = GroupingTimer(lambda: 0.25e-3)
    policy = SamplingPolicy(warmup_s=0.001, max_time_s=60.0, min_time_s=0.01, min_samples=10)
    m = measure(_noop, timer, policy)
    assert m.loops == 4
    assert all(total == pytest.approx(1e-3) for total in m.totals_s)
    assert m.summary.median == pytest.approx(0.25e-3)
    assert m.samples_s == tuple(total / 4 for total in m.totals_s)


def test_jax_device_spans_are_the_gpu_work_between_sample_boundaries(tmp_path: Path) -> None:
    """The JAX timer's reading of XLA's perfetto trace (in the format an H200 wrote: docs/RESULTS.md section
    9): the lead-in before the first boundary is left out, a boundary's own kernels too, and each sample is
    the span from its first kernel's start to its last one's end."""
    import gzip

    from pytest_gpubench.measure.timers import device_spans

    boundary = {"hlo_module": "jit_gpubench_sample_boundary"}
    user = {"hlo_module": "jit__lambda"}

    def kernel(ts: float, dur: float, args: dict[str, str]) -> dict[str, object]:
        return {"ph": "X", "name": "k", "pid": 1, "tid": 14, "ts": ts, "dur": dur, "args": args}

    events = [
        {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/device:GPU:0"}},
        {"ph": "M", "name": "process_name", "pid": 701, "args": {"name": "/host:CPU"}},
        {"ph": "X", "name": "$python call", "pid": 701, "tid": 7, "ts": 0.0, "dur": 9000.0},  # host: not counted
        kernel(10.0, 1400.0, user),  # the untimed lead-in
        kernel(1410.0, 0.7, boundary), kernel(1411.0, 60.0, boundary),  # a memset and the flush: one boundary
        kernel(1472.0, 0.5, user), kernel(1473.0, 1320.25, user),
        kernel(2794.0, 60.0, boundary),
        kernel(2855.0, 1319.75, user),
        kernel(4175.0, 60.0, boundary),
    ]
    folder = tmp_path / "plugins" / "profile" / "run"
    folder.mkdir(parents=True)
    with gzip.open(folder / "perfetto_trace.json.gz", "wt") as handle:
        json.dump({"traceEvents": events}, handle)
    assert device_spans(str(tmp_path), 2) == pytest.approx([1321.25e-6, 1319.75e-6])
    with pytest.raises(RuntimeError, match="3 sample boundaries for 3 samples"):
        device_spans(str(tmp_path), 3)
