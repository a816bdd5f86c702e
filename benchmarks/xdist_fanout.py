"""Does `pytest -n K` spread GPU-bound cells over K GPUs, and does no GPU ever serve two workers at once?

    python benchmarks/xdist_fanout.py --workers 2        # on nvidia-h200-x2
    python benchmarks/xdist_fanout.py --workers 2 4      # on nvidia-h200-x4

Runs benchmarks/fanout_cells.py (--cells cells, each a bf16 matmul measured for a fixed --seconds) with -n 0 and with
-n K, and prints the wall-time ratio against -n 0 (target: <= 0.6 at K=2, <= 0.35 at K=4), and for every
run the cells' physical GPUs (nvidia-smi UUID held, the UUID torch saw) and hold intervals, checking that
intervals on one GPU never overlap.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from gpu_assignment import cells_of, overlaps, print_assignment


def run(workers: int, out: Path, cells: int, seconds: float) -> tuple[float, list[dict]]:
    fixed_time = ["--gpubench-warmup=0.5", f"--gpubench-min-time={seconds}", f"--gpubench-max-time={seconds}"]
    command = [sys.executable, "-m", "pytest", str(HERE / "fanout_cells.py"), "-q", "-p", "no:cacheprovider",
               "--gpu=H200:1", *fixed_time, f"--benchmark-json={out}"]
    if workers:
        command += ["-n", str(workers)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False,
                          env={**os.environ, "FANOUT_CELLS": str(cells)})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stdout[-4000:], done.stderr[-2000:])
        raise SystemExit(f"-n {workers}: pytest exited {done.returncode}")
    return wall, cells_of(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    parser.add_argument("--cells", type=int, default=32, help="single-GPU cells in the suite")
    parser.add_argument("--seconds", type=float, default=2.0, help="each cell measures for exactly this long")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    report: dict[str, object] = {}
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        serial, serial_cells = run(0, Path(tmp) / "n0.json", args.cells, args.seconds)
        report["n0"] = {"wall_s": serial, "cells": serial_cells}
        print(f"-n 0: {serial:.1f} s for {len(serial_cells)} cells")
        for workers in args.workers:
            wall, cells = run(workers, Path(tmp) / f"n{workers}.json", args.cells, args.seconds)
            ratio = wall / serial
            target = {2: 0.6, 4: 0.35}.get(workers)
            problems = overlaps(cells)
            ok &= not problems and (target is None or ratio <= target)
            print(f"-n {workers}: {wall:.1f} s, {ratio:.2f}x of -n 0 (target <= {target}); "
                  f"{len({c['gpu_uuids'][0] for c in cells})} GPUs used; overlaps: {problems or 'none'}")
            print_assignment(cells)
            report[f"n{workers}"] = {"wall_s": wall, "ratio": ratio, "cells": cells, "problems": problems}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print("RESULT:", "OK" if ok else "NOT MET")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
