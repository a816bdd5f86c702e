"""Where a decode step of the generation suite's model spends its device time, kernel by kernel, in torch and in JAX.

The suite (bench_suites/test_generation.py) says how long a decode step takes in each framework, on the host's
clock and on the device's. This says why the device figures differ: the kernels each framework runs for one step,
their names, how many per step and how long each takes, as the frameworks' own profilers record them:

- torch: ``torch.profiler`` (Kineto over CUPTI on a GPU): each kernel, memcpy and memset on the GPU's clock; on
  the CPU target, each aten operator's self time;
- JAX: XLA's profiler (``jax.profiler``, CUPTI on a GPU): each kernel on the GPU's timelines; on the CPU target,
  each thunk XLA's runtime ran (the events that carry an ``hlo_op``).

Each framework runs in a process of its own: CUPTI takes one subscriber at a time, and a second profiler in a
process that had the first one finds it held (or records nothing). Both build the model from the suite's plan and
seeds (gpt_decoder.GPU_PLAN / CPU_PLAN), generate once, warm the decode step at the middle position for 1 s, then
profile ``--steps`` back-to-back steps and divide by their number.

Kernels fall into four classes by name (attention: flash / fmha / attention / sdpa; copies: memcpy / memset /
copy; matmul: gemm / gemv / xmma / nvjet / cublas / cutlass / matmul / dot / aten::mm, addmm, bmm, linear; the
rest: element-wise, norms, reductions, fusions). The classes are a reading aid; the names are the evidence.

    python benchmarks/generation_kernels.py --target gpu --json kernels.json     # both frameworks, side by side
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FRAMEWORKS = ("torch", "jax")
TOP = 12
WARM_S = 1.0
CHILD_TIMEOUT_S = 900
CLASSES = (
    ("attention", re.compile(r"flash|fmha|attention|sdpa", re.I)),
    ("copy", re.compile(r"memcpy|memset|copy", re.I)),
    ("matmul", re.compile(r"gemm|gemv|xmma|nvjet|cublas|cutlass|matmul|dot|aten::(mm|addmm|bmm|linear)$", re.I)),
)


def kernel_class(name: str) -> str:
    return next((label for label, pattern in CLASSES if pattern.search(name)), "other")


def summarise(durations_us: dict[str, list[float]], steps: int, wall_s: float, profiler: str) -> dict[str, Any]:
    """Per-step figures from each kernel name's recorded durations over ``steps`` profiled steps."""
    per_name = [(name, len(times) / steps, sum(times) / steps / 1e3) for name, times in durations_us.items()]
    per_name.sort(key=lambda row: -row[2])
    total_ms = sum(ms for _, _, ms in per_name)
    classes: dict[str, float] = defaultdict(float)
    for name, _, ms in per_name:
        classes[kernel_class(name)] += ms
    return {
        "profiler": profiler,
        "steps_profiled": steps,
        "wall_ms_per_step": wall_s / steps * 1e3,
        "kernel_ms_per_step": total_ms,
        "kernels_per_step": sum(calls for _, calls, _ in per_name),
        "distinct_kernels": len(per_name),
        "classes_ms_per_step": {label: classes.get(label, 0.0) for label in ("matmul", "attention", "copy", "other")},
        "top": [{"name": name, "class": kernel_class(name), "calls_per_step": calls, "ms_per_step": ms,
                 "share_pct": 100 * ms / total_ms if total_ms else 0.0}
                for name, calls, ms in per_name[:TOP]],
    }


# -- one framework, in this process ---------------------------------------------------------------------------


def _warm(step: Any, sync: Any) -> None:
    start = time.perf_counter()
    while time.perf_counter() - start < WARM_S:
        step()
    sync()


def profile_torch(decoder: Any, position: int, steps: int, on_gpu: bool) -> dict[str, Any]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    step = decoder.decode_step_at(position)

    def sync() -> None:
        if on_gpu:
            torch.cuda.synchronize()

    _warm(step, sync)
    activities = [ProfilerActivity.CUDA] if on_gpu else [ProfilerActivity.CPU]
    durations: dict[str, list[float]] = defaultdict(list)
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        wall_s = time.perf_counter() - start
    if on_gpu:
        # the GPU's own records, as Chrome's trace format writes them: kernels, copies and memsets, in us
        with tempfile.TemporaryDirectory(prefix="gpubench-torch-trace-") as folder:
            path = os.path.join(folder, "trace.json")
            prof.export_chrome_trace(path)
            events = json.loads(Path(path).read_text())["traceEvents"]
        for event in events:
            if event.get("ph") == "X" and event.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset"):
                durations[event["name"]].append(float(event["dur"]))
        profiler = "torch.profiler (Kineto, CUPTI): GPU kernels, memcpys and memsets"
    else:
        # self times: an operator's time less its children's, so the figures add up without counting twice
        for row in prof.key_averages():
            if row.self_cpu_time_total > 0:
                durations[row.key].extend([row.self_cpu_time_total / row.count] * row.count)
        profiler = "torch.profiler on the CPU: each aten operator's self time"
    if not durations:
        raise RuntimeError(f"torch.profiler recorded nothing for {steps} decode steps")
    return summarise(durations, steps, wall_s, profiler)


def profile_jax(decoder: Any, position: int, steps: int, on_gpu: bool) -> dict[str, Any]:
    import shutil

    import jax

    from pytest_gpubench.measure.timers import xla_trace_events

    step = decoder.decode_step_at(position)
    last: list[Any] = [None]

    def call() -> None:
        last[0] = step()

    def sync() -> None:
        jax.block_until_ready(last[0])

    _warm(call, sync)
    folder = tempfile.mkdtemp(prefix="gpubench-jax-trace-")
    try:
        jax.profiler.start_trace(folder, create_perfetto_trace=True)
        try:
            start = time.perf_counter()
            for _ in range(steps):
                call()
            sync()
            wall_s = time.perf_counter() - start
        finally:
            jax.profiler.stop_trace()
        events, gpu_pids = xla_trace_events(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    durations: dict[str, list[float]] = defaultdict(list)
    for event in events:
        if on_gpu:
            if event.get("pid") in gpu_pids:
                durations[event["name"]].append(float(event.get("dur", 0.0)))
        elif "hlo_op" in (event.get("args") or {}):  # the thunks XLA's CPU runtime ran, not its bookkeeping
            durations[event["name"]].append(float(event.get("dur", 0.0)))
    if not durations:
        raise RuntimeError(f"XLA's profiler recorded no {'GPU kernel' if on_gpu else 'thunk'} for {steps} decode "
                           "steps")
    return summarise(durations, steps, wall_s, "XLA's profiler (CUPTI): GPU kernels and copies" if on_gpu else
                     "XLA's profiler on the CPU: each thunk the runtime ran")


def run_one(framework: str, target: str, steps: int) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "bench_suites"))
    sys.path.insert(0, str(ROOT))
    from gpt_decoder import CPU_PLAN, GPU_PLAN, PROMPT_SEED, WEIGHT_SEED, JaxDecoder, TorchDecoder, make_prompts, \
        make_weights

    on_gpu = target == "gpu"
    plan = GPU_PLAN if on_gpu else CPU_PLAN
    torch_device = "cuda" if on_gpu else "cpu"
    weights = make_weights(plan.config, plan.shape.max_seq, WEIGHT_SEED, torch_device)
    prompts = make_prompts(plan.config, plan.shape, PROMPT_SEED)
    position = plan.shape.prompt_len + plan.shape.new_tokens // 2  # the suite's device-clock position
    if framework == "torch":
        decoder: Any = TorchDecoder(weights, plan.config, plan.shape, prompts, torch_device)
    else:
        import jax

        decoder = JaxDecoder(weights, plan.config, plan.shape, prompts, jax.devices("gpu" if on_gpu else "cpu")[0])
    decoder.generate()  # the step replays the last generation's token, as the suite's does
    profiled = (profile_torch if framework == "torch" else profile_jax)(decoder, position, steps, on_gpu)
    return {"framework": framework, "target": target, "model": plan.config.describe(), "batch": plan.shape.batch,
            "position": position, **profiled}


# -- both, side by side ---------------------------------------------------------------------------------------


def run_child(framework: str, target: str, steps: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gpubench-kernels-") as folder:
        out = Path(folder) / f"{framework}.json"
        command = [sys.executable, __file__, "--target", target, "--steps", str(steps), "--one", framework,
                   "--json", str(out)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        # as the plugin does: XLA would otherwise take 75 % of the GPU's memory before torch makes the weights
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
        if done.returncode != 0:
            return {"framework": framework, "target": target, "error": f"exit {done.returncode}",
                    "stderr": done.stderr[-20_000:]}
        return json.loads(out.read_text())


def table(results: list[dict[str, Any]]) -> str:
    lines = []
    good = [r for r in results if "error" not in r]
    for result in results:
        if "error" in result:
            lines.append(f"{result['framework']}: FAILED ({result['error']})\n{result['stderr']}")
    if good:
        label = f"{'per decode step':34}" + "".join(f"{r['framework']:>14}" for r in good)
        lines.append(label)
        rows = [("wall ms (host clock, profiled)", "wall_ms_per_step", ".3f"),
                ("kernel ms (sum of durations)", "kernel_ms_per_step", ".3f"),
                ("kernels", "kernels_per_step", ".1f"), ("distinct kernels", "distinct_kernels", "d")]
        for title, key, form in rows:
            lines.append(f"{title:34}" + "".join(f"{r[key]:>14{form}}" for r in good))
        for label_class in ("matmul", "attention", "copy", "other"):
            lines.append(f"{'  ' + label_class + ' ms':34}" + "".join(
                f"{r['classes_ms_per_step'][label_class]:>14.3f}" for r in good))
        for result in good:
            lines.append(f"\n{result['framework']}: {result['profiler']}, {result['steps_profiled']} steps at "
                         f"position {result['position']}")
            lines.append(f"  {'ms/step':>8} {'share':>6} {'calls':>6}  {'class':9} kernel")
            for row in result["top"]:
                lines.append(f"  {row['ms_per_step']:>8.4f} {row['share_pct']:>5.1f}% {row['calls_per_step']:>6.1f}"
                             f"  {row['class']:9} {row['name'][:110]}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=("gpu", "cpu"), required=True)
    parser.add_argument("--steps", type=int, default=20, help="decode steps profiled (default 20)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--one", choices=FRAMEWORKS, help=argparse.SUPPRESS)  # a child's framework
    args = parser.parse_args()
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    if args.one:
        result = run_one(args.one, args.target, args.steps)
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
        return 0
    results = [run_child(framework, args.target, args.steps) for framework in FRAMEWORKS]
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
