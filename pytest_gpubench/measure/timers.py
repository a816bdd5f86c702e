"""Device-correct timers: CUDA events for torch on a GPU, ``block_until_ready`` for JAX, ``perf_counter_ns`` on CPU.

A host clock around an asynchronous GPU call measures the launch, not the kernel. Each timer here
returns, for a batch of samples, the time each sample really took on the device that ran it.
"""

from __future__ import annotations

import abc
import math
import sys
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from .steady import COLD_MIN_S, STEP_S, WARM_GAP_S, run_until_steady

CacheMode = Literal["cold", "hot"]
TimerName = Literal["auto", "cuda", "jax", "jax_host", "cpu"]
TIMER_NAMES: tuple[str, ...] = ("auto", "cuda", "jax", "jax_host", "cpu")

# triton's do_bench flushes with 256 MB; twice L2 where that is bigger (B200: 126 MB of L2).
GPU_FLUSH_BYTES = 256 * 2**20
CPU_FLUSH_BYTES = 64 * 2**20


class Timer(abc.ABC):
    """Times batches of calls. ``time_batch`` returns one total per sample, each covering ``loops`` calls."""

    name: str
    max_batch: int = 1000
    on_cpu: bool = True
    # CPU-side timers group calls so that one sample is long against the clock's resolution.
    min_sample_s: float = 0.0
    # the smallest difference one sample can show: host clocks' own, CUDA events' about 0.5 us (CUDA's
    # documentation of cudaEventElapsedTime); a change per call smaller than resolution / loops is noise
    resolution_s: float = time.get_clock_info("perf_counter").resolution
    batch_s: float = 0.0  # how long one batch of samples should last; 0: the sampler's default
    # True where every batch starts with its own untimed lead-in, so a warm-up before the first adds nothing
    settles_itself: bool = False
    lead_in_stop: str = ""  # where it settles itself: why the newest batch's lead-in ended

    def __init__(self, cache: CacheMode) -> None:
        self.cache = cache

    def sample_seconds(self, wall_per_sample_s: float) -> float:
        """How long one sample keeps the timed device busy, which sizes a batch to last ``batch_s``; the wall
        time per sample of the last batch, unless the timer knows better."""
        return wall_per_sample_s

    def batch_limit(self, loops: int) -> int:
        """The most samples one batch may hold."""
        return self.max_batch

    @abc.abstractmethod
    def time_batch(self, fn: Callable[[], Any], count: int, loops: int) -> list[float]: ...

    def synchronize(self) -> None:  # noqa: B027 - CPU timers have nothing to wait for
        pass

    @property
    def device_uuid(self) -> str:
        """The UUID of the GPU this timer's events ran on, or "" where it cannot say (CPU and host clocks)."""
        return ""


class CpuTimer(Timer):
    name = "cpu_perf_counter"
    min_sample_s = 50e-6  # perf_counter_ns resolves ~100 ns: a 50 µs sample keeps that under 0.2 %

    def __init__(self, cache: CacheMode) -> None:
        super().__init__(cache)
        self._flush_buffer = np.zeros(CPU_FLUSH_BYTES, dtype=np.uint8) if cache == "cold" else None

    def time_batch(self, fn: Callable[[], Any], count: int, loops: int) -> list[float]:
        totals = []
        clock = time.perf_counter_ns
        for _ in range(count):
            if self._flush_buffer is not None:
                self._flush_buffer += 1  # read-modify-write evicts the caches' previous contents
            start = clock()
            for _ in range(loops):
                fn()
            totals.append((clock() - start) * 1e-9)
        return totals


class JaxTimer(Timer):
    """Host clock around the calls and ``jax.block_until_ready`` on the last result.

    The host clock includes dispatch and the wait for the result (tens of µs on a GPU). ``hot`` samples
    queue ``loops`` calls before one wait, which spreads that cost; ``cold`` samples are one call each.
    """

    name = "jax_block_until_ready"

    def __init__(self, cache: CacheMode) -> None:
        super().__init__(cache)
        import jax
        import jax.numpy as jnp

        self._jax = jax
        self.on_cpu = jax.default_backend() == "cpu"
        self.min_sample_s = 2e-3 if cache == "hot" else 0.0
        self._flush: Callable[[], Any] | None = None
        if cache == "cold":
            nbytes = GPU_FLUSH_BYTES if jax.default_backend() == "gpu" else CPU_FLUSH_BYTES
            buffer = jnp.zeros(nbytes // 4, dtype=jnp.float32)
            bump = jax.jit(lambda b: b + 1.0)
            self._flush = lambda: bump(buffer)

    def time_batch(self, fn: Callable[[], Any], count: int, loops: int) -> list[float]:
        block = self._jax.block_until_ready
        clock = time.perf_counter_ns
        totals = []
        for _ in range(count):
            if self._flush is not None:
                block(self._flush())
            start = clock()
            result = None
            for _ in range(loops):
                result = fn()
            block(result)
            totals.append((clock() - start) * 1e-9)
        return totals


class CudaEventTimer(Timer):
    """CUDA events on the current stream of the cell's device, in NVBench's two modes.

    ``cold``: each sample is one isolated call, after a write of a buffer larger than L2 (as triton's
    ``do_bench``): the latency of a call that finds nothing in cache. ``hot``: each sample is ``loops``
    back-to-back calls between two events (NVBench's batch measurement): throughput with warm caches.
    Before each batch a spin kernel holds the stream until the host has queued every sample, as NVBench's
    blocking kernel does, so no sample contains the host's launch latency, only device time; after each
    batch untimed calls keep the device busy while the host reads the events, so it never idles between
    batches either.
    """

    name = "cuda_event"
    on_cpu = False
    resolution_s = 0.5e-6
    QUEUE_ENTRIES = 500  # CUDA queues about 1000 pending launches; stay well inside, or the GPU starves
    FILL_S = 1e-3  # device work queued behind a batch while the host reads its events
    FILL_LAUNCHES = 100

    def __init__(self, cache: CacheMode, device: Any = None) -> None:
        super().__init__(cache)
        import torch

        self._torch = torch
        chosen = torch.device(device if device is not None else "cuda")
        self.device = chosen if chosen.index is not None else torch.device("cuda", torch.cuda.current_device())
        props = torch.cuda.get_device_properties(self.device)
        l2_bytes = int(getattr(props, "L2_cache_size", 0) or 0)
        self._flush_buffer = (
            torch.empty(max(GPU_FLUSH_BYTES, 2 * l2_bytes), dtype=torch.int8, device=self.device) if cache == "cold" else None
        )
        # hot samples group calls so that two events' overhead (~0.3 µs) is small against the sample
        self.min_sample_s = 100e-6 if cache == "hot" else 0.0
        self._cycles_per_s = self._calibrate_spin()
        self._host_s_per_call = 20e-6  # both refined after each batch
        self._device_s_per_call = 0.0

    @property
    def device_uuid(self) -> str:
        """The UUID of the GPU the events ran on, as CUDA reports it: evidence of which physical GPU a cell used."""
        return str(getattr(self._torch.cuda.get_device_properties(self.device), "uuid", ""))

    def batch_limit(self, loops: int) -> int:
        return max(1, self.QUEUE_ENTRIES // (loops + 3))  # flush + 2 events + the calls

    def _calibrate_spin(self) -> float:
        torch = self._torch
        with torch.cuda.device(self.device):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            cycles = 2_000_000
            torch.cuda._sleep(cycles)  # first call loads the kernel
            start.record()
            torch.cuda._sleep(cycles)
            end.record()
            end.synchronize()
            return cycles / (start.elapsed_time(end) * 1e-3)

    def synchronize(self) -> None:
        self._torch.cuda.synchronize(self.device)

    def time_batch(self, fn: Callable[[], Any], count: int, loops: int) -> list[float]:
        torch = self._torch
        with torch.cuda.device(self.device):
            starts = [torch.cuda.Event(enable_timing=True) for _ in range(count)]
            ends = [torch.cuda.Event(enable_timing=True) for _ in range(count)]
            torch.cuda._sleep(int(self._hold_seconds(count, loops) * self._cycles_per_s))
            host_start = time.perf_counter()
            flush = self._flush_buffer
            for i in range(count):
                if flush is not None:
                    flush.zero_()
                starts[i].record()
                for _ in range(loops):
                    fn()
                ends[i].record()
            host_elapsed = time.perf_counter() - host_start
            # with no device time per call yet (the first call), a fill sized for a microsecond call would queue
            # 100 calls: 2 s of an fp32 8192³ product that the next batch then waited behind
            if self._device_s_per_call > 0:
                self._keep_busy(fn, loops)
            ends[-1].synchronize()
        self._host_s_per_call = host_elapsed / (count * loops)
        totals = [s.elapsed_time(e) * 1e-3 for s, e in zip(starts, ends)]
        self._device_s_per_call = float(np.median(totals)) / loops
        return totals

    def _keep_busy(self, fn: Callable[[], Any], loops: int) -> None:
        """Queue untimed samples behind the batch, so the device keeps working while the host reads the
        events and queues the next batch. An idle gap at every batch lets a power-limited kernel (an
        H200's bf16 matmul) run 2-3 % faster than it does under sustained load; do_bench has no such gaps."""
        per_sample = max(loops * self._device_s_per_call, 1e-6)
        samples = max(1, min(math.ceil(self.FILL_S / per_sample), self.FILL_LAUNCHES // loops or 1))
        flush = self._flush_buffer
        for _ in range(samples):
            if flush is not None:
                flush.zero_()
            for _ in range(loops):
                fn()

    def _hold_seconds(self, count: int, loops: int) -> float:
        """Just long enough that the device never waits for the host within the batch.

        The host queues sample i by (i+1)·h; held for H, the device starts it at H + i·g. No wait needs
        H >= h + (count-1)·max(0, h-g). Any longer is idle time, and idle time lets a power-limited
        kernel run faster than it does under load, so the hold is kept to twice that bound.
        """
        host = loops * self._host_s_per_call + 5e-6  # + the events (and flush) the host also queues
        device = loops * self._device_s_per_call
        return min(0.5, 2.0 * (host + (count - 1) * max(0.0, host - device)) + 20e-6)


BOUNDARY_MODULE = "gpubench_sample_boundary"  # the jitted function that separates samples in a trace


def device_only_profiler_options(jax: Any) -> Any:
    """XLA profiler options that record the GPU's kernels but not the host's or Python's activity, or None
    where this JAX has no such options. Host tracing records ~18 events a call: stopping a trace of 1,000
    calls then took 0.17 s on a CPU, and the tracing slowed dispatch 4x (0.015 against 0.004 s a 1,000 calls),
    both a JAX cell's cost and, for a call shorter than its dispatch, a change to what it measures."""
    options_type = getattr(jax.profiler, "ProfileOptions", None)
    if options_type is None:
        return None
    options = options_type()
    options.host_tracer_level = 0
    options.python_tracer_level = 0
    return options


class JaxDeviceTimer(JaxTimer):
    """JAX on a GPU, timed on the device's clock through XLA's profiler (CUPTI kernel records).

    A batch is queued as one stream of work, as triton's do_bench queues it: a boundary (in cold mode the
    256 MB L2 flush, in hot mode a one-element add), then the sample's ``loops`` calls, then the next
    boundary... and a wait only at the end, so the GPU never idles between samples and runs at the
    clocks it sustains under load (an idle gap lets a power-limited kernel run faster: docs/RESULTS.md).
    Stopping a trace waits for the GPU, so each batch starts from a rested GPU: untimed calls go first until
    their time stops moving, as the sampler's warm-up does for torch (without them a bf16 8192³ product on an
    H200 read 1.33 ms, against 1.51 ms after 0.3 s of load), and batches last 0.5 s, so there are few such
    starts. A sample's time is the span of the GPU work between two boundaries: first kernel start to last
    kernel end, on the GPU's timestamps. Dispatch, Python and the wait fall outside, as CUDA events leave them
    outside for torch. Only the device is traced (``profiler_options``), unless this XLA needs the host traced
    to tie kernels to their module."""

    name = "jax_profiler_device"
    on_cpu = False
    batch_s = 0.5  # each batch is a trace, and each trace starts after a gap: long batches, few gaps
    LEAD_IN_CAP_S = 1.0  # as the sampler's warm-up on a GPU: a power-limited kernel may still slide after 0.5 s
    clock: Callable[[], float] = staticmethod(time.perf_counter)  # the lead-in's; tests drive it
    settles_itself = True
    resolution_s = 1e-6  # the trace's kernel records are in microseconds with three decimals

    def __init__(self, cache: CacheMode) -> None:
        super().__init__(cache)
        import jax.numpy as jnp

        self.min_sample_s = 0.0  # device spans need no long samples to beat a host clock's resolution
        flush_buffer = jnp.zeros((GPU_FLUSH_BYTES if cache == "cold" else 4) // 4, dtype=jnp.float32)

        def gpubench_sample_boundary(buffer: Any) -> Any:
            return buffer + 1.0

        boundary = self._jax.jit(gpubench_sample_boundary)
        self._boundary = lambda: boundary(flush_buffer)
        self._jax.block_until_ready(self._boundary())
        self._device_s_per_call = 0.0
        self._loops = 1
        self._rested_since = -math.inf  # when the GPU last finished this timer's work
        self.profiler_options = device_only_profiler_options(self._jax)

    def lead_in(self, fn: Callable[[], Any], per_call_s: float) -> Any:
        """Untimed calls before a batch's first sample, until their time has stopped moving (steady.py), so
        that sample 0 finds the GPU at the clocks it sustains, not those of a rested one (stopping a trace
        waits for the GPU, so each batch starts after a rest). Steps are waited for, which costs the device
        microseconds of idling between 50 ms steps. Returns the newest call's output; ``lead_in_stop`` says
        why it ended. With no estimate of a call's time yet (the first batch), one call: it compiles."""
        if per_call_s <= 0:
            self.lead_in_stop = "one call (no estimate of a call's time yet)"
            return fn()
        clock = self.clock
        warm = clock() - self._rested_since <= WARM_GAP_S
        calls = max(1, min(math.ceil(STEP_S / per_call_s), 100_000))
        result = None
        wall_per_call = math.inf

        def step() -> float:
            nonlocal calls, result, wall_per_call
            start = clock()
            done = 0
            while done < calls:
                result = fn()
                done += 1
                if clock() - start > STEP_S:  # a dispatch-bound call takes longer on the host than on the GPU
                    break
            self._jax.block_until_ready(result)
            wall_per_call = (clock() - start) / done
            calls = max(1, min(math.ceil(STEP_S / wall_per_call), 100_000))
            return wall_per_call

        begin = clock()
        step()
        if wall_per_call > 2 * per_call_s:
            # dispatch-bound (a microsecond kernel): the GPU idles between calls and has no clock slope to wait
            # out, and the host's time per call, which these steps see, says nothing of the device's
            while clock() - begin < COLD_MIN_S:
                step()
            self.lead_in_stop = (f"{clock() - begin:.2f} s: dispatch-bound, {wall_per_call * 1e6:.1f} us a call "
                                 f"on the host against {per_call_s * 1e6:.1f} us on the GPU")
            return result
        self.lead_in_stop = run_until_steady(step, warm=warm, cap_s=self.LEAD_IN_CAP_S, clock=clock).stop
        return result

    def sample_seconds(self, wall_per_sample_s: float) -> float:
        """The device time of a sample: a batch's wall time also holds its lead-in, the trace's start and stop
        and the reading of the trace, fixed costs that would shrink every next batch to a handful of samples
        (the suites' JAX cells stopped on the time cap with 4-10 samples)."""
        if self._device_s_per_call > 0:
            return self._device_s_per_call * self._loops
        return wall_per_sample_s

    def time_batch(self, fn: Callable[[], Any], count: int, loops: int) -> list[float]:
        import shutil
        import tempfile

        profiler = self._jax.profiler
        trace_dir = tempfile.mkdtemp(prefix="gpubench-jax-trace-")
        try:
            profiler.start_trace(trace_dir, create_perfetto_trace=True, profiler_options=self.profiler_options)
            try:
                # Only the newest outputs are kept: the stream runs in order, so waiting for the last boundary
                # waits for everything, and an output dropped while queued is freed once its work is done
                # (keeping them all ran an H200 out of memory on a 1 GiB add).
                result = self.lead_in(fn, self._device_s_per_call)
                for _ in range(count):
                    result = self._boundary()
                    for _ in range(loops):
                        result = fn()
                self._jax.block_until_ready((result, self._boundary()))
                self._rested_since = self.clock()
            finally:
                profiler.stop_trace()
            try:
                spans = device_spans(trace_dir, count)
            except RuntimeError:
                if self.profiler_options is None:
                    raise
                # an XLA that ties kernels to their module only when it also traces the host: trace it too
                self.profiler_options = None
                return self.time_batch(fn, count, loops)
            self._device_s_per_call = float(np.median(spans)) / loops
            self._loops = loops
            return spans
        finally:
            shutil.rmtree(trace_dir, ignore_errors=True)


def xla_trace_events(trace_dir: str) -> tuple[list[dict[str, Any]], set[Any]]:
    """The complete events ("ph": "X") of the perfetto trace XLA's profiler wrote under ``trace_dir``, and the
    process ids of its GPU timelines (none on a host without one)."""
    import glob
    import gzip
    import json
    import os

    paths = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
    if not paths:
        raise RuntimeError(f"XLA's profiler wrote no perfetto trace under {trace_dir}")
    with gzip.open(paths[0], "rt") as handle:
        document = json.load(handle)
    events = document["traceEvents"] if isinstance(document, dict) else document
    gpu_pids = {e["pid"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"
                and str(e.get("args", {}).get("name", "")).startswith("/device:GPU")}
    return [e for e in events if e.get("ph") == "X"], gpu_pids


def device_spans(trace_dir: str, count: int) -> list[float]:
    """Seconds of GPU work between consecutive boundaries in a perfetto trace XLA's profiler wrote: for each
    sample, the first kernel's start to the last kernel's end. The work before the first boundary is the
    untimed lead-in."""
    events, gpu_pids = xla_trace_events(trace_dir)
    work = sorted((float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0.0)),
                   BOUNDARY_MODULE in str((e.get("args") or {}).get("hlo_module", "")))
                  for e in events if e.get("pid") in gpu_pids)
    boundaries = [i for i, (_, _, is_boundary) in enumerate(work) if is_boundary]
    # a boundary may run as more than one kernel (a memset and the write): consecutive ones are one boundary
    starts = [i for i in boundaries if i - 1 not in boundaries]
    if len(starts) < count + 1:
        raise RuntimeError(
            f"XLA's profiler recorded {len(starts)} sample boundaries for {count} samples: is another profiler "
            "(torch's) holding CUPTI? pass timer='jax_host' to time on the host clock"
        )
    spans = []
    for first, after in zip(starts[:count], starts[1:count + 1]):
        inside = [(s, e) for s, e, is_boundary in work[first:after] if not is_boundary]
        if not inside:
            raise RuntimeError("XLA's profiler recorded no GPU work for a timed JAX call: is it cached or on the "
                               "host? pass timer='jax_host' to time it on the host clock")
        spans.append((max(e for _, e in inside) - min(s for s, _ in inside)) * 1e-6)  # the trace counts in us
    return spans


def _is_jax_value(value: Any) -> bool:
    if "jax" not in sys.modules:
        return False
    jax = sys.modules["jax"]
    leaves = jax.tree_util.tree_leaves(value)
    return bool(leaves) and all(isinstance(leaf, jax.Array) for leaf in leaves)


def _torch_cuda_ready() -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and torch.cuda.is_available()


def choose_timer(requested: str, first_result: Any, on_gpu: bool) -> str:
    """Pick the timer for ``requested`` ('auto' looks at what the function returned and where the cell runs)."""
    if requested != "auto":
        return requested
    if _is_jax_value(first_result):
        return "jax"
    if on_gpu and _torch_cuda_ready():
        return "cuda"
    if on_gpu:
        # A host clock around an asynchronous GPU call times the launch, not the work: refuse to guess.
        raise RuntimeError(
            "no device timer for this call on a GPU target: it returned no JAX array and torch has no CUDA here; "
            "pass timer='cpu' if the function waits for its own GPU work, or record samples with gpubench.record()"
        )
    return "cpu"


def make_timer(name: str, cache: CacheMode, device: Any = None) -> Timer:
    if name == "cuda":
        if not _torch_cuda_ready():
            raise RuntimeError("timer='cuda' needs torch with a CUDA GPU; this process has none")
        return CudaEventTimer(cache, device)
    if name == "jax":
        import jax

        # on a GPU, the device's clock through XLA's profiler; on the CPU backend the host clock is the device's
        return JaxDeviceTimer(cache) if jax.default_backend() == "gpu" else JaxTimer(cache)
    if name == "jax_host":
        return JaxTimer(cache)
    if name == "cpu":
        return CpuTimer(cache)
    raise ValueError(f"unknown timer {name!r}; use one of {', '.join(TIMER_NAMES)}")


def loops_for(timer: Timer, seconds_per_call: float) -> int:
    if timer.min_sample_s <= 0 or seconds_per_call <= 0:
        return 1
    return max(1, math.ceil(timer.min_sample_s / seconds_per_call))
