"""A/A and slowdown comparisons through the regression gate, with real timings.

    python benchmarks/gate_aa.py --gpu H200:1 --json gate_aa.json      # on nvidia-h200
    python benchmarks/gate_aa.py --gpu cpu                             # on the CPU machine

Saves --baselines runs of benchmarks/gate_cells.py, then runs --comparisons unchanged comparisons with
--gpubench-gate (each must flag no cell regressed), then --slowdowns comparisons with one cell doing
--slowdown times the work (each must fail exactly that cell). Prints every comparison's verdict counts
and the slowed cell's verdict line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def pytest_run(workdir: Path, args: list[str], slowdown: float) -> tuple[int, str, float]:
    command = [sys.executable, "-m", "pytest", "gate_cells.py", "-p", "no:cacheprovider", *args]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True, check=False,
                          env={**os.environ, "GATE_SLOWDOWN": str(slowdown)})
    return done.returncode, done.stdout + done.stderr, time.perf_counter() - start


def gate_section(output: str) -> list[str]:
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if re.search(r"-+ gpubench gate -+", line)), None)
    if start is None:
        return []
    section = []
    for line in lines[start + 1:]:
        if line.startswith(("markdown summary", "-", "=", "Name ")):
            break
        if line.strip():
            section.append(line)
    return section


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gpu", default="cpu")
    parser.add_argument("--baselines", type=int, default=3)
    parser.add_argument("--comparisons", type=int, default=10)
    parser.add_argument("--slowdowns", type=int, default=3)
    parser.add_argument("--slowdown", type=float, default=1.1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threshold", default="5%")
    parser.add_argument("--max-time", default="1")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="gate-aa-"))
    shutil.copy(HERE / "gate_cells.py", workdir / "gate_cells.py")
    (workdir / "conftest.py").write_text("import pytest\n\n@pytest.fixture\ndef on_gpu(gpubench_target):\n"
                                         "    return not gpubench_target.is_cpu\n")
    common = [f"--gpu={args.gpu}", f"--gpubench-rounds={args.rounds}", f"--gpubench-max-time={args.max_time}",
              f"--gpubench-min-time={min(0.5, float(args.max_time))}"]
    gate = ["--benchmark-compare", f"--gpubench-gate={args.threshold}"]
    report: dict[str, object] = {"gpu": args.gpu, "rounds": args.rounds, "threshold": args.threshold,
                                 "slowdown": args.slowdown, "baselines": [], "comparisons": [], "slowdowns": []}
    for i in range(args.baselines):
        code, output, wall = pytest_run(workdir, [*common, "--benchmark-autosave"], 1.0)
        print(f"baseline {i + 1}: exit {code}, {wall:.0f} s", flush=True)
        report["baselines"].append({"exit": code, "wall_s": wall})  # type: ignore[union-attr]
        if code != 0:
            print(output[-3000:])
            raise SystemExit("a baseline run failed")
    for kind, slowdown, count in (("comparisons", 1.0, args.comparisons), ("slowdowns", args.slowdown, args.slowdowns)):
        for i in range(count):
            code, output, wall = pytest_run(workdir, [*common, *gate], slowdown)
            section = gate_section(output)
            print(f"{kind[:-1]} {i + 1} (work x{slowdown:g}): exit {code}, {wall:.0f} s: {section[0] if section else '?'}",
                  flush=True)
            for line in section[1:]:
                print(f"    {line}", flush=True)
            report[kind].append({"exit": code, "wall_s": wall, "gate": section})  # type: ignore[union-attr]
    flagged = sum(any("regressed" in line for line in c["gate"]) for c in report["comparisons"])  # type: ignore[union-attr]
    caught = sum(c["exit"] == 1 and any("regressed" in line for line in c["gate"]) for c in report["slowdowns"])  # type: ignore[union-attr]
    print(f"A/A comparisons with a cell flagged regressed: {flagged} of {args.comparisons}; "
          f"slowdowns caught: {caught} of {args.slowdowns}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
