"""What XLA's profiler records for timed JAX calls on a GPU: the tracks, and how a kernel is tied to the call
that launched it. Prints a summary; writes the raw trace next to --out.

    python benchmarks/jax_trace_probe.py --out /tmp/probe
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="/tmp/jax-probe")
    args = parser.parse_args()
    import jax
    import jax.numpy as jnp

    n = 8192
    a = jax.random.normal(jax.random.key(0), (n, n), dtype=jnp.bfloat16)
    matmul = jax.jit(lambda x, y: x @ y)
    add = jax.jit(lambda x, y: x + y)
    big = jax.random.normal(jax.random.key(1), (256 * 2**20 // 4,), dtype=jnp.float32)
    matmul(a, a).block_until_ready()
    add(big, big).block_until_ready()
    t0 = time.perf_counter()
    jax.profiler.start_trace(args.out, create_perfetto_trace=True)
    t1 = time.perf_counter()
    for i in range(5):
        with jax.profiler.TraceAnnotation(f"gpubench-call-{i}"):
            matmul(a, a).block_until_ready()
    for i in range(5, 8):
        with jax.profiler.TraceAnnotation(f"gpubench-call-{i}"):
            add(big, big).block_until_ready()
    t2 = time.perf_counter()
    jax.profiler.stop_trace()
    t3 = time.perf_counter()
    print(f"start_trace {t1 - t0:.3f} s, calls {t2 - t1:.3f} s, stop_trace {t3 - t2:.3f} s")
    files = glob.glob(os.path.join(args.out, "**", "*"), recursive=True)
    print("files:", [f.replace(args.out, "") for f in files if os.path.isfile(f)])
    perfetto = [f for f in files if f.endswith(("perfetto_trace.json.gz", ".trace.json.gz"))]
    print("perfetto:", perfetto)
    for path in perfetto:
        with gzip.open(path, "rt") as handle:
            document = json.load(handle)
        events = document["traceEvents"] if isinstance(document, dict) else document
        names = {}
        for e in events:
            if e.get("ph") == "M" and e.get("name") in ("process_name", "thread_name"):
                names[(e["name"], e.get("pid"), e.get("tid"))] = e["args"]["name"]
        print("process/thread names:", json.dumps({f"{k[0]}:{k[1]}:{k[2]}": v for k, v in names.items()})[:3000])
        by_track = collections.Counter((e.get("pid"), e.get("tid")) for e in events if e.get("ph") == "X")
        print("X events per track:", by_track.most_common(20))
        shown = collections.Counter()
        for e in events:
            if e.get("ph") != "X":
                continue
            key = (e.get("pid"), e.get("tid"))
            if shown[key] < 4 or "gpubench" in e.get("name", ""):
                shown[key] += 1
                print("EV", json.dumps({k: e.get(k) for k in ("name", "pid", "tid", "ts", "dur", "args")})[:600])
        other = collections.Counter(e.get("ph") for e in events)
        print("phases:", other)
        flows = [e for e in events if e.get("ph") in ("s", "f", "t")][:6]
        print("flow examples:", json.dumps(flows)[:1500])


if __name__ == "__main__":
    main()
