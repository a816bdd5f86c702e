"""Does `pytest -n K` spread GPU-bound cells over K GPUs, and does no GPU ever serve two workers at once?

    python benchmarks/xdist_fanout.py --workers 2        # on nvidia-h200-x2
    python benchmarks/xdist_fanout.py --workers 2 4      # on nvidia-h200-x4

Runs benchmarks/fanout_cells.py (8 cells, each a bf16 matmul measured for a fixed 2 s) with -n 0 and with
-n K, and prints the wall-time ratio against -n 0 (target: <= 0.6 at K=2, <= 0.35 at K=4), and for every
run the cells' physical GPUs (nvidia-smi UUID held, the UUID torch saw) and hold intervals, checking that
intervals on one GPU never overlap.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXED_TIME = ["--gpubench-warmup=0.5", "--gpubench-min-time=2", "--gpubench-max-time=2"]


def run(workers: int, out: Path) -> tuple[float, list[dict]]:
    command = [sys.executable, "-m", "pytest", str(HERE / "fanout_cells.py"), "-q", "-p", "no:cacheprovider",
               "--gpu=H200:1", *FIXED_TIME, f"--benchmark-json={out}"]
    if workers:
        command += ["-n", str(workers)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stdout[-4000:], done.stderr[-2000:])
        raise SystemExit(f"-n {workers}: pytest exited {done.returncode}")
    cells = [b["extra_info"]["gpubench"] | {"name": b["name"]} for b in json.loads(out.read_text())["benchmarks"]]
    return wall, cells


def overlaps(cells: list[dict]) -> list[str]:
    problems = []
    by_gpu: dict[str, list[tuple[float, float, str]]] = {}
    for cell in cells:
        for uuid in cell["gpu_uuids"]:
            by_gpu.setdefault(uuid, []).append((cell["gpus_held_from"], cell["gpus_held_until_at_least"], cell["name"]))
        torch_uuid = cell.get("torch_device_uuid", "")
        if torch_uuid and not cell["gpu_uuids"][0].endswith(torch_uuid):
            problems.append(f"{cell['name']}: held {cell['gpu_uuids'][0]} but torch ran on {torch_uuid}")
    for uuid, spans in by_gpu.items():
        spans.sort()
        for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
            if start < end:
                problems.append(f"{uuid}: {a} and {b} overlap by {end - start:.3f} s")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    report: dict[str, object] = {}
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        serial, serial_cells = run(0, Path(tmp) / "n0.json")
        report["n0"] = {"wall_s": serial, "cells": serial_cells}
        print(f"-n 0: {serial:.1f} s for {len(serial_cells)} cells")
        for workers in args.workers:
            wall, cells = run(workers, Path(tmp) / f"n{workers}.json")
            ratio = wall / serial
            target = {2: 0.6, 4: 0.35}.get(workers)
            problems = overlaps(cells)
            ok &= not problems and (target is None or ratio <= target)
            print(f"-n {workers}: {wall:.1f} s, {ratio:.2f}x of -n 0 (target <= {target}); "
                  f"{len({c['gpu_uuids'][0] for c in cells})} GPUs used; overlaps: {problems or 'none'}")
            for cell in sorted(cells, key=lambda c: c["gpus_held_from"]):
                print(f"    {cell['name']:24} {cell['gpu_uuids'][0]}  held {cell['gpus_held_from']:.3f}.."
                      f"{cell['gpus_held_until_at_least']:.3f}  waited {cell['gpus_waited_s']:.3f} s  "
                      f"{cell['metrics']['tflops']:.0f} TFLOP/s")
            report[f"n{workers}"] = {"wall_s": wall, "ratio": ratio, "cells": cells, "problems": problems}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print("RESULT:", "OK" if ok else "NOT MET")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
