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

CacheMode = Literal["cold", "hot"]
TimerName = Literal["auto", "cuda", "jax", "cpu"]
TIMER_NAMES: tuple[str, ...] = ("auto", "cuda", "jax", "cpu")

# Bigger than any GPU's L2 (H100/H200: 50-60 MB, B200: 126 MB), as triton's do_bench flushes with 256 MB.
GPU_FLUSH_BYTES = 512 * 2**20
CPU_FLUSH_BYTES = 64 * 2**20


class Timer(abc.ABC):
    """Times batches of calls. ``time_batch`` returns one total per sample, each covering ``loops`` calls."""

    name: str
    max_batch: int = 1000
    # CPU-side timers group calls so that one sample is long against the clock's resolution.
    min_sample_s: float = 0.0

    def __init__(self, cache: CacheMode) -> None:
        self.cache = cache

    @abc.abstractmethod
    def time_batch(self, fn: Callable[[], Any], count: int, loops: int) -> list[float]: ...

    def synchronize(self) -> None:  # noqa: B027 - CPU timers have nothing to wait for
        pass


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
    """Host clock around the call and ``jax.block_until_ready`` on its result (dispatch included)."""

    name = "jax_block_until_ready"
    min_sample_s = 50e-6

    def __init__(self, cache: CacheMode) -> None:
        super().__init__(cache)
        import jax
        import jax.numpy as jnp

        self._jax = jax
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
    """CUDA events around each call, on the current stream of the cell's device.

    Before each batch a spin kernel holds the stream until the host has queued every sample, as NVBench's
    blocking kernel does: no sample then contains the host's launch latency, only device time. ``cold``
    overwrites a buffer larger than L2 before each sample, as triton's ``do_bench`` does.
    """

    name = "cuda_event"
    max_batch = 200  # CUDA queues ~1000 pending launches; each sample takes flush + 2 events + fn

    def __init__(self, cache: CacheMode, device: Any = None) -> None:
        super().__init__(cache)
        import torch

        self._torch = torch
        chosen = torch.device(device if device is not None else "cuda")
        self.device = chosen if chosen.index is not None else torch.device("cuda", torch.cuda.current_device())
        props = torch.cuda.get_device_properties(self.device)
        l2_bytes = int(getattr(props, "L2_cache_size", 0) or 0)
        self._flush_buffer = (
            torch.empty(max(GPU_FLUSH_BYTES, 4 * l2_bytes), dtype=torch.int8, device=self.device) if cache == "cold" else None
        )
        self._cycles_per_s = self._calibrate_spin()
        self._host_s_per_sample = 20e-6  # refined after each batch

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
            hold_s = min(0.5, 2.0 * count * self._host_s_per_sample + 50e-6)
            torch.cuda._sleep(int(hold_s * self._cycles_per_s))
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
            ends[-1].synchronize()
        self._host_s_per_sample = host_elapsed / count
        return [s.elapsed_time(e) * 1e-3 for s, e in zip(starts, ends)]


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
    return "cpu"


def make_timer(name: str, cache: CacheMode, device: Any = None) -> Timer:
    if name == "cuda":
        if not _torch_cuda_ready():
            raise RuntimeError("timer='cuda' needs torch with a CUDA GPU; this process has none")
        return CudaEventTimer(cache, device)
    if name == "jax":
        return JaxTimer(cache)
    if name == "cpu":
        return CpuTimer(cache)
    raise ValueError(f"unknown timer {name!r}; use one of {', '.join(TIMER_NAMES)}")


def loops_for(timer: Timer, seconds_per_call: float) -> int:
    if timer.min_sample_s <= 0 or seconds_per_call <= 0:
        return 1
    return max(1, math.ceil(timer.min_sample_s / seconds_per_call))
