"""benchmarks/gpu_assignment.py, the check behind the fan-out figures: it must fail when two cells held one
GPU at once, or when CUDA ran a cell on a GPU it did not hold, and pass a clean run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_assignment.py"


def cell(name: str, gpus: list[str], start: float, end: float, ran_on: str) -> dict:
    info = {"gpu_uuids": gpus, "gpus_held_from": start, "gpus_held_until_at_least": end, "gpus_waited_s": 0.0,
            "torch_device_uuid": ran_on}
    return {"name": name, "extra_info": {"gpubench": info}}


def check(tmp_path: Path, cells: list[dict]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"benchmarks": cells}))
    return subprocess.run([sys.executable, str(SCRIPT), str(path)], capture_output=True, text=True, check=False)


def test_disjoint_holds_on_the_gpus_they_ran_on_pass(tmp_path: Path) -> None:
    done = check(tmp_path, [cell("a", ["GPU-aaaa"], 0.0, 2.0, "aaaa"), cell("b", ["GPU-aaaa"], 2.0, 3.0, "aaaa"),
                            cell("c", ["GPU-bbbb"], 0.5, 2.5, "bbbb")])
    assert done.returncode == 0, done.stdout
    assert "3 cells on 2 GPUs; overlaps: none" in done.stdout


def test_two_cells_holding_one_gpu_at_once_fail_and_are_named(tmp_path: Path) -> None:
    done = check(tmp_path, [cell("first", ["GPU-aaaa"], 0.0, 2.0, "aaaa"), cell("second", ["GPU-aaaa"], 1.5, 3.0, "aaaa")])
    assert done.returncode == 1
    assert "GPU-aaaa: first and second overlap by 0.500 s" in done.stdout


@pytest.mark.parametrize("held", [["GPU-aaaa"], []])
def test_a_cell_run_on_a_gpu_it_did_not_hold_fails(tmp_path: Path, held: list[str]) -> None:
    done = check(tmp_path, [cell("stray", held, 0.0, 1.0, "bbbb")])
    assert done.returncode == 1
    assert "stray: torch ran on bbbb, which it did not hold" in done.stdout
