"""Adaptive warm-up: a cell warms up until its figure stops moving, not for a fixed second, and a device the
previous cell kept busy needs less of it. Driven by timers that take real time, like a GPU's, and return what
a power-limited kernel does: faster from rest, slower as it heats, then steady."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import pytest

from pytest_gpubench.measure.sampler import (
    GPU_WARMUP_S,
    WARM_GAP_S,
    DeviceWarmth,
    SamplingPolicy,
    measure,
)
from pytest_gpubench.measure.steady import COLD_MIN_S
from pytest_gpubench.measure.timers import Timer

ADAPTIVE = SamplingPolicy(warmup_s=None, max_time_s=2.0, min_time_s=0.1, min_samples=10, stdrel=0.005)


class DeviceTimer(Timer):
    """A GPU kernel whose time per call follows ``per_call(seconds of load so far)``; each batch takes that
    long in real time, so the sampler's clocks see what they would on a device."""

    name = "scripted_device"
    on_cpu = False
    max_batch = 10_000

    def __init__(self, per_call: Callable[[float], float]) -> None:
        super().__init__("hot")
        self._per_call = per_call
        self._load_s = 0.0
        self.calls = 0

    def time_batch(self, fn: Callable[[], Any], count: int, loops: int) -> list[float]:
        totals = []
        for _ in range(count):
            total = sum(self._per_call(self._load_s) for _ in range(loops))
            self._load_s += total
            totals.append(total)
        self.calls += count * loops
        time.sleep(sum(totals))
        return totals


def power_limited(load_s: float) -> float:
    """1.33 ms from rest, settling at 1.58 ms with a 0.2 s time constant: an H200's bf16 8192³ matmul read
    1.32-1.33 ms after an idle gap and 1.57-1.59 ms under sustained load (docs/RESULTS.md, section 9)."""
    return 1.58e-3 - 0.25e-3 * math.exp(-load_s / 0.2)


def _noop() -> None:
    return None


def test_a_power_limited_kernel_warms_up_until_it_stops_slowing_and_is_measured_at_its_sustained_speed() -> None:
    m = measure(_noop, DeviceTimer(power_limited), ADAPTIVE)
    assert m.warmup_stop.startswith("steady after ") and "(rested device)" in m.warmup_stop
    # from rest it slows by 19 %; stopped at a drift of 0.5 % between windows, it is within 1 % of sustained
    assert m.summary.median == pytest.approx(1.58e-3, rel=0.01)
    assert 0.4 < m.warmup_s < GPU_WARMUP_S  # longer than a steady kernel needs, shorter than the old fixed 1 s


def test_a_steady_kernel_stops_warming_up_after_six_batches_on_a_rested_device_and_four_on_a_warm_one() -> None:
    rested = measure(_noop, DeviceTimer(lambda _: 1e-3), ADAPTIVE)
    assert rested.warmup_stop.startswith("steady after 6 batches") and "(rested device)" in rested.warmup_stop
    assert COLD_MIN_S <= rested.warmup_s < 0.45  # 6 batches of 50 ms, not a second

    warmth = DeviceWarmth()
    warmth.mark_busy("GPU-0")  # the previous cell's work ended just now
    warm = measure(_noop, DeviceTimer(lambda _: 1e-3), ADAPTIVE, warmth=warmth, device="GPU-0")
    assert warm.warmup_stop.startswith("steady after 4 batches") and "(warm device)" in warm.warmup_stop
    assert warm.warmup_s < rested.warmup_s
    assert warmth.is_warm("GPU-0") and not warmth.is_warm("GPU-1")  # this cell hands its warmth to the next


def test_a_kernel_that_never_settles_warms_up_to_the_cap_and_says_it_was_still_moving() -> None:
    def climbing(load_s: float) -> float:  # 10 % slower every 100 ms of load: never steady
        return 1e-3 * (1.0 + load_s)

    m = measure(_noop, DeviceTimer(climbing), ADAPTIVE)
    assert m.warmup_stop.startswith(f"cap {GPU_WARMUP_S:g} s reached after ") and ", still moving +" in m.warmup_stop
    assert GPU_WARMUP_S <= m.warmup_s < GPU_WARMUP_S + 0.2


def test_a_warm_up_the_user_fixed_is_kept_as_given() -> None:
    policy = SamplingPolicy(warmup_s=0.3, max_time_s=2.0, min_time_s=0.05, min_samples=10)
    m = measure(_noop, DeviceTimer(lambda _: 1e-3), policy)
    assert m.warmup_stop == "fixed 0.3 s" and 0.3 <= m.warmup_s < 0.4


def test_a_timer_with_its_own_lead_in_warms_up_with_its_first_call_only() -> None:
    class LeadInTimer(DeviceTimer):
        settles_itself = True  # as JAX's device timer, whose every batch starts with 0.5 s of untimed calls

    timer = LeadInTimer(lambda _: 1e-3)
    m = measure(_noop, timer, ADAPTIVE)
    assert m.warmup_calls == 1 and m.warmup_stop.startswith("first call only")


def test_a_first_call_that_compiles_for_longer_than_the_cap_leaves_the_warm_up_its_whole_time() -> None:
    class CompilingTimer(DeviceTimer):
        """The first call compiles on the host for 1.2 s, longer than the GPU warm-up's 1 s cap."""

        def time_batch(self, fn: Callable[[], Any], count: int, loops: int) -> list[float]:
            if self.calls == 0:
                time.sleep(1.2)
            return super().time_batch(fn, count, loops)

    m = measure(_noop, CompilingTimer(power_limited), ADAPTIVE)
    # warmed until the kernel stopped slowing, as without the compile, not cut at the cap with no batch run
    assert m.warmup_stop.startswith("steady after ") and "(rested device)" in m.warmup_stop, m.warmup_stop
    assert 1.2 <= m.first_call_s < 1.3 and m.warmup_s > m.first_call_s + 0.4
    assert m.summary.median == pytest.approx(1.58e-3, rel=0.01)


def test_a_device_that_rested_longer_than_the_gap_is_cold_again() -> None:
    now = [100.0]
    warmth = DeviceWarmth(clock=lambda: now[0])
    assert not warmth.is_warm("GPU-0")  # never used
    warmth.mark_busy("GPU-0")
    now[0] += WARM_GAP_S
    assert warmth.is_warm("GPU-0")
    now[0] += 0.01
    assert not warmth.is_warm("GPU-0")


def test_the_cell_record_says_why_its_warm_up_ended(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_cells="""
        import time

        def spin():
            end = time.perf_counter() + 20e-6
            while time.perf_counter() < end:
                pass

        def test_first(gpubench):
            gpubench(spin)
    """)
    result = pytester.runpytest("--gpu=cpu", "--gpubench-max-time=0.3", "--gpubench-min-time=0.05",
                                "--benchmark-json=out.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    import json

    details = json.loads((pytester.path / "out.json").read_text())["benchmarks"][0]["extra_info"]["gpubench"]
    stop = details["warmup_stop"]
    assert stop.startswith(("steady after ", "cap 0.1 s reached after ")), stop
    assert details["warmup_s"] <= details["first_call_s"] + 0.1 + 0.05
    assert 0 < details["first_call_s"] <= details["warmup_s"]


class ScriptedCall:
    """A JAX call whose time follows ``per_call(seconds of load so far)`` on a virtual clock (the lead-in's
    ``clock``): what JAX's device timer's lead-in sees of a power-limited kernel, with no host jitter."""

    def __init__(self, per_call: Callable[[float], float]) -> None:
        jnp = pytest.importorskip("jax.numpy")

        self._per_call = per_call
        self._output = jnp.zeros(())
        self.now = 1000.0
        self.load_s = 0.0

    def __call__(self) -> Any:
        seconds = self._per_call(self.load_s)
        self.now += seconds
        self.load_s += seconds
        return self._output


def _device_timer(call: ScriptedCall) -> Any:
    pytest.importorskip("jax")
    from pytest_gpubench.measure.timers import JaxDeviceTimer

    timer = JaxDeviceTimer("hot")
    timer.clock = lambda: call.now
    return timer


def test_jax_device_timers_lead_in_runs_until_a_power_limited_kernel_stops_slowing() -> None:
    call = ScriptedCall(power_limited)
    timer = _device_timer(call)
    timer.lead_in(call, per_call_s=1.33e-3)
    stop = timer.lead_in_stop
    assert stop.startswith("steady after ") and "(rested device)" in stop, stop
    # settled near the sustained time: past the old fixed 0.5 s, short of the cap
    assert 0.5 < call.load_s < timer.LEAD_IN_CAP_S
    assert power_limited(call.load_s) == pytest.approx(1.58e-3, rel=0.01)


def test_jax_device_timers_lead_in_is_short_after_its_own_batch_and_for_a_dispatch_bound_kernel() -> None:
    steady = ScriptedCall(lambda _: 2e-3)
    timer = _device_timer(steady)
    timer.lead_in(steady, per_call_s=2e-3)
    assert timer.lead_in_stop.startswith("steady after 6 batches, 0.3") and "(rested device)" in timer.lead_in_stop
    timer._rested_since = steady.now  # noqa: SLF001 - as at the end of a batch: the GPU was busy just now
    timer.lead_in(steady, per_call_s=2e-3)
    assert timer.lead_in_stop.startswith("steady after 4 batches, 0.2") and "(warm device)" in timer.lead_in_stop
    steady.now += 0.6  # a rest longer than the warm gap: judged as rested again
    timer.lead_in(steady, per_call_s=2e-3)
    assert "(rested device)" in timer.lead_in_stop

    # 2 us of GPU work a call, 300 us of host work: the GPU idles, and the host's clock cannot show it settle
    host_bound = ScriptedCall(lambda _: 300e-6)
    timer = _device_timer(host_bound)
    timer.lead_in(host_bound, per_call_s=2e-6)
    assert timer.lead_in_stop.startswith("0.10 s: dispatch-bound, 300.0 us a call"), timer.lead_in_stop


def test_jax_device_timers_first_batch_leads_in_with_the_one_call_that_compiles() -> None:
    call = ScriptedCall(lambda _: 1e-3)
    timer = _device_timer(call)
    timer.lead_in(call, per_call_s=0.0)
    assert call.load_s == pytest.approx(1e-3) and timer.lead_in_stop.startswith("one call")


def test_jax_device_timer_traces_the_host_too_where_device_only_tracing_ties_no_kernel_to_its_module() -> None:
    # On JAX's CPU backend a trace has no GPU timeline at all: device-only tracing finds no boundary, the timer
    # retries the batch with XLA's default options (host traced too), and only then gives up, saying why.
    call = ScriptedCall(lambda _: 1e-4)
    timer = _device_timer(call)
    assert timer.profiler_options is not None and timer.profiler_options.host_tracer_level == 0
    with pytest.raises(RuntimeError, match="sample boundaries"):
        timer.time_batch(call, 2, 1)
    assert timer.profiler_options is None
