"""What tracing costs a JAX cell on a GPU: one batch of the device timer with the host traced (XLA's default
options) and with only the device traced (the timer's default), side by side in one process.

    python benchmarks/jax_trace_cost.py --json jax_trace_cost.json        # on a GPU host

For each kernel and each way: the batch's wall time, its samples' median span, and whether device-only tracing
still tied kernels to their module (the timer falls back to tracing the host where it does not).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from pytest_gpubench.measure.timers import JaxDeviceTimer


def kernels(jax: Any, jnp: Any) -> dict[str, tuple[Any, int]]:
    """name -> (call, samples a batch): the suites' matmul and scale, and a microsecond add."""
    a = jax.random.normal(jax.random.key(0), (8192, 8192), dtype=jnp.bfloat16)
    x = jax.random.normal(jax.random.key(1), (2**28,), dtype=jnp.float32)
    tiny = jnp.ones((16,), dtype=jnp.float32)
    matmul, scale, add = jax.jit(lambda m: m @ m), jax.jit(lambda v: v * 2.0), jax.jit(lambda v: v + v)
    return {"matmul_bf16_8192": (lambda: matmul(a), 300), "scale_fp32_1GiB": (lambda: scale(x), 1000),
            "add_16": (lambda: add(tiny), 1000)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    import jax
    import jax.numpy as jnp

    rows = []
    for name, (fn, count) in kernels(jax, jnp).items():
        jax.block_until_ready(fn())
        for way in ("host and device", "device only"):
            timer = JaxDeviceTimer("cold")
            if way == "host and device":
                timer.profiler_options = None
            timer.time_batch(fn, 1, 1)  # the first batch: the estimate of a call's time that sizes the lead-in
            for repeat in range(args.repeats):
                start = time.perf_counter()
                spans = timer.time_batch(fn, count, 1)
                row = {"kernel": name, "tracing": way, "repeat": repeat + 1, "samples": count,
                       "batch_wall_s": time.perf_counter() - start, "median_span_us": statistics.median(spans) * 1e6,
                       "lead_in": timer.lead_in_stop,
                       "device_only_kept": timer.profiler_options is not None if way == "device only" else None}
                rows.append(row)
                print(f"{name:18s} {way:16s} repeat {repeat + 1}: batch {row['batch_wall_s']:.3f} s for {count} "
                      f"samples, median span {row['median_span_us']:.2f} us, device-only kept: "
                      f"{row['device_only_kept']}; lead-in {row['lead_in']}", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
