"""How long a bench suite takes, and how much of it is the plugin's: run it once with a given copy of
pytest_gpubench and read each cell's time from JUnit XML and its warm-up and figures from the saved JSON.

    python benchmarks/suite_wall_time.py --label after -- bench_suites/test_matmul.py --gpu H200:1
    python benchmarks/suite_wall_time.py --label before --package-root .before -- bench_suites/test_matmul.py --gpu H200:1

``--package-root`` puts another copy of the package first on the path (e.g. ``git archive <commit>
pytest_gpubench | tar -x -C .before``), so both runs use the same suite and the same machine, minutes apart.
A cell's time is pytest's own (setup + call + teardown in JUnit XML): the test's tensors, the timer's set-up,
warm-up and sampling. Prints one JSON object; --json keeps it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def mean_over(per_cell: dict[str, dict[str, Any]], keys: tuple[str, ...],
              figure: Callable[[dict[str, Any]], float]) -> float | None:
    """The mean of ``figure`` over the cells, or None where a cell lacks one of the ``keys`` it reads (a version
    of the package that does not record it)."""
    if not per_cell or any(c[key] is None for c in per_cell.values() for key in keys):
        return None
    return statistics.fmean(figure(c) for c in per_cell.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True)
    parser.add_argument("--package-root", type=Path, default=None, help="a folder holding another pytest_gpubench")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("pytest_args", nargs="+", help="after --: the suite and its options")
    args = parser.parse_args()
    root = (args.package_root or REPO).resolve()
    if not (root / "pytest_gpubench" / "plugin.py").exists():
        parser.error(f"{root} holds no pytest_gpubench package")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), str(REPO), os.environ.get("PYTHONPATH", "")]))
    # where the package is installed its entry point loads the plugin, and naming it again is an error
    if not any(ep.name == "gpubench" for ep in importlib.metadata.entry_points(group="pytest11")):
        env["PYTEST_PLUGINS"] = "pytest_gpubench.plugin"
    # -P: "python -m" otherwise puts the working directory (this checkout) first on sys.path, ahead of
    # PYTHONPATH, and every run would time this checkout's package whatever --package-root says
    # (Python 3.10 has no -P: there the check below refuses a --package-root the run would not use)
    isolated = [sys.executable, "-P"] if sys.version_info >= (3, 11) else [sys.executable]
    package_file = subprocess.run([*isolated, "-c", "import pytest_gpubench.plugin as p; print(p.__file__)"],
                                  cwd=REPO, env=env, capture_output=True, text=True, check=True).stdout.strip()
    if not Path(package_file).resolve().is_relative_to(root):
        parser.error(f"the run would import pytest_gpubench from {package_file}, not from {root}")
    # beside --json, so that a run stopped by a time limit still leaves pytest's own files to read
    keep = args.json.parent if args.json else None
    with tempfile.TemporaryDirectory() as tmp:
        folder = keep or Path(tmp)
        junit, saved = folder / f"{args.label}_junit.xml", folder / f"{args.label}_saved.json"
        command = [*isolated, "-m", "pytest", *args.pytest_args, "-p", "no:cacheprovider", "-q",
                   f"--junitxml={junit}", f"--benchmark-json={saved}"]
        start = time.perf_counter()
        code = subprocess.run(command, cwd=REPO, env=env).returncode
        wall_s = time.perf_counter() - start
        cells = ({case.get("name", ""): float(case.get("time", 0.0)) for case in ET.parse(junit).getroot().iter("testcase")
                  if case.find("skipped") is None} if junit.exists() else {})
        benchmarks = json.loads(saved.read_text())["benchmarks"] if saved.exists() else []
    measured = {b["name"]: b for b in benchmarks}

    def cell(name: str, seconds: float) -> dict[str, Any]:
        saved = measured.get(name)
        details = saved["extra_info"]["gpubench"] if saved else {}
        return {
            "cell_s": seconds,
            "median_s": saved["stats"]["median"] if saved else None,
            "samples": saved["stats"]["rounds"] if saved else None,
            **{key: details.get(key) for key in ("warmup_s", "first_call_s", "warmup_stop", "measure_s",
                                                 "stop_reason")},
        }

    per_cell = {name: cell(name, seconds) for name, seconds in cells.items()}
    result = {
        "label": args.label,
        "package_root": str(root),
        "package_file": package_file,
        "exit_code": code,
        "wall_s": wall_s,
        "cells": len(cells),
        "mean_cell_s": statistics.fmean(cells.values()) if cells else None,
        "max_cell_s": max(cells.values()) if cells else None,
        # recorded by every version: a package that does not record measure_s is compared on this and cell_s
        "mean_warmup_s": mean_over(per_cell, ("warmup_s",), lambda c: c["warmup_s"]),
        # the plugin's share where the package records it: warm-up and sampling, without the test's own set-up;
        # the first call (the test's compile and allocation) is inside warmup_s, and kept apart where recorded
        "mean_plugin_s": mean_over(per_cell, ("warmup_s", "measure_s"),
                                   lambda c: c["warmup_s"] + c["measure_s"]),
        "mean_plugin_s_without_first_call": mean_over(
            per_cell, ("warmup_s", "first_call_s", "measure_s"),
            lambda c: c["warmup_s"] - c["first_call_s"] + c["measure_s"]),
        "per_cell": per_cell,
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
