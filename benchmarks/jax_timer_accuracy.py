"""JAX on the device's clock, beside torch's CUDA events and JAX's old host clock, for the same kernels.

    python benchmarks/jax_timer_accuracy.py --repeats 3 --json jax_timer.json      # on nvidia-h200

For each kernel (bf16 8192³ matrix product, 1 GiB fp32 add, 16-element add), every method measures the same
work with pytest-gpubench's sampler (cold: L2 flushed before each sample, the fixture's default on a GPU):
- torch, CUDA events (the fixture's torch timer);
- JAX, host clock around the call and block_until_ready (the fixture's JAX timer before);
- JAX, device spans from XLA's profiler (the fixture's JAX timer now);
and, as the reference the JAX timer must meet, the profiler's own per-call device time: calls queued as the
timer queues a batch (the same untimed lead-in, then a flush before each call, for as long as a batch lasts),
and each call's kernel durations summed, grouped by XLA's own execution id (scope_range_id) rather than by
the timer's boundaries; the median.
Then the kernels each framework ran, with their median durations (XLA's profiler; torch's profiler).
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import shutil
import statistics
import tempfile
from typing import Any

from pytest_gpubench.measure.sampler import SamplingPolicy, measure
from pytest_gpubench.measure.timers import BOUNDARY_MODULE, CudaEventTimer, JaxDeviceTimer, JaxTimer, \
    xla_trace_events

POLICY = SamplingPolicy()  # the fixture's defaults: adaptive warm-up (docs/RESULTS.md, section 10)


def jax_kernels(name: str, jax: Any, jnp: Any) -> tuple[Any, tuple[Any, ...]]:
    if name == "matmul_bf16_8192":
        a = jax.random.normal(jax.random.key(0), (8192, 8192), dtype=jnp.bfloat16)
        return jax.jit(lambda x, y: x @ y), (a, a)
    if name == "add_fp32_1GiB":
        x = jax.random.normal(jax.random.key(1), (2**28,), dtype=jnp.float32)
        return jax.jit(lambda p, q: p + q), (x, x)
    x = jnp.ones((16,), dtype=jnp.float32)
    return jax.jit(lambda p, q: p + q), (x, x)


def torch_kernels(name: str, torch: Any) -> tuple[Any, tuple[Any, ...]]:
    if name == "matmul_bf16_8192":
        a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        return torch.matmul, (a, a)
    if name == "add_fp32_1GiB":
        x = torch.randn(2**28, device="cuda")
        return torch.add, (x, x)
    x = torch.ones(16, device="cuda")
    return torch.add, (x, x)


def profiler_reference(jax: Any, fn: Any, args: tuple[Any, ...], per_call_s: float) -> tuple[float, dict[str, float]]:
    """Median over a batch of calls of the summed durations of each call's kernels, grouped by XLA's scope id.

    The calls are queued as the timer queues a batch: after the same untimed lead-in, for as long as its batch
    lasts, so that the reference and the timer see the GPU in the same state. A power-limited kernel's time
    follows the GPU's recent load (an H200's bf16 matmul: 1.33 ms rested, 1.51 ms after 0.3 s, 1.58 ms after
    1 s), and a reference taken earlier on that slope than the timer's samples differs by the GPU's doing."""
    timer = JaxDeviceTimer("cold")
    flush = timer._boundary  # noqa: SLF001 - the same flush the timer queues
    calls = min(max(200, math.ceil(timer.batch_s / per_call_s)), 3000)
    trace_dir = tempfile.mkdtemp()
    try:
        jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
        result = timer.lead_in(lambda: fn(*args), per_call_s)
        for _ in range(calls):  # no wait between: the first flush marks where the lead-in's kernels end
            flush()
            result = fn(*args)
        jax.block_until_ready((result, flush()))
        del result
        jax.profiler.stop_trace()
        events, gpu = xla_trace_events(trace_dir)
    finally:
        shutil.rmtree(trace_dir, ignore_errors=True)
    kernels = [e for e in events if e.get("pid") in gpu]
    first_flush = min(float(e["ts"]) for e in kernels if BOUNDARY_MODULE in (e.get("args") or {}).get("hlo_module", ""))
    per_call: dict[str, float] = collections.defaultdict(float)
    by_kernel: dict[str, list[float]] = collections.defaultdict(list)
    for e in kernels:
        if float(e["ts"]) > first_flush and BOUNDARY_MODULE not in (e.get("args") or {}).get("hlo_module", ""):
            per_call[(e.get("args") or {}).get("scope_range_id", "?")] += e["dur"]
            by_kernel[e["name"]].append(e["dur"])
    return statistics.median(per_call.values()) * 1e-6, {k: statistics.median(v) for k, v in by_kernel.items()}


def torch_kernel_names(torch: Any, fn: Any, args: tuple[Any, ...]) -> dict[str, float]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(50):
            fn(*args)
        torch.cuda.synchronize()
    out = {}
    for event in prof.key_averages():
        device_us = getattr(event, "device_time", 0.0)
        if event.count and device_us:
            out[event.key] = float(device_us)  # average per occurrence, in us
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    import jax
    import jax.numpy as jnp
    import torch

    results: list[dict[str, Any]] = []
    kernels = ("matmul_bf16_8192", "add_fp32_1GiB", "add_16")
    for repeat in range(args.repeats):
        for name in kernels:
            row: dict[str, Any] = {"repeat": repeat + 1, "kernel": name}
            t_fn, t_args = torch_kernels(name, torch)
            row["torch_cuda_events_s"] = measure(lambda: t_fn(*t_args), CudaEventTimer("cold"), POLICY).summary.median
            j_fn, j_args = jax_kernels(name, jax, jnp)
            jax.block_until_ready(j_fn(*j_args))
            row["jax_host_s"] = measure(lambda: j_fn(*j_args), JaxTimer("cold"), POLICY).summary.median
            row["jax_device_s"] = measure(lambda: j_fn(*j_args), JaxDeviceTimer("cold"), POLICY).summary.median
            row["jax_profiler_reference_s"], row["jax_kernels_us"] = profiler_reference(jax, j_fn, j_args,
                                                                                      row["jax_device_s"])
            row["jax_device_vs_reference"] = row["jax_device_s"] / row["jax_profiler_reference_s"] - 1
            row["jax_device_vs_torch"] = row["jax_device_s"] / row["torch_cuda_events_s"] - 1
            results.append(row)
            print(f"repeat {repeat + 1} {name:18s} torch events {row['torch_cuda_events_s'] * 1e6:9.2f} us | "
                  f"jax host {row['jax_host_s'] * 1e6:9.2f} us | jax device {row['jax_device_s'] * 1e6:9.2f} us | "
                  f"profiler per call {row['jax_profiler_reference_s'] * 1e6:9.2f} us | device vs profiler "
                  f"{row['jax_device_vs_reference']:+.2%} | device vs torch {row['jax_device_vs_torch']:+.2%}", flush=True)
            del j_args, t_args
    # torch's profiler keeps CUPTI subscribed for the rest of the process, and XLA's cannot subscribe after it
    # (CUPTI_ERROR_MULTIPLE_SUBSCRIBERS_NOT_SUPPORTED): it runs last
    for row in results:
        if row["repeat"] == 1:
            t_fn, t_args = torch_kernels(row["kernel"], torch)
            row["torch_kernels_us"] = torch_kernel_names(torch, t_fn, t_args)
    for row in results:
        if row["repeat"] == 1:
            print(f"{row['kernel']}: XLA ran {json.dumps({k: round(v, 2) for k, v in row['jax_kernels_us'].items()})}")
            top = sorted(row["torch_kernels_us"].items(), key=lambda kv: -kv[1])[:4]
            print(f"{row['kernel']}: torch ran {json.dumps({k[:90]: round(v, 2) for k, v in top})}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
