"""bench_suites/test_dataloader.py on the CPU: a training loop fed by a DataLoader, its throughput and idle share
in the saved JSON, a cpu-starved flag where the loader's JPEG decoding makes the model wait (and none where it
does not), and heartbeats that say the loop is waiting on the loader."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest

SUITE = Path(__file__).resolve().parent.parent / "bench_suites" / "test_dataloader.py"
ARGS = ("--gpu=cpu", "-p", "no:cacheprovider", "--benchmark-json=out.json", "-W", "ignore::UserWarning")


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """The suite file as it is, in a folder of its own (its rootdir, where the report folder goes too). It runs in
    a subprocess: an in-process run would drop the torch modules it imported when pytester restores sys.modules,
    and importing them again in one process crashes it."""
    # found, not imported: pytester restores sys.modules after each test, and torch imported twice in one process
    # crashes it
    for module in ("torch", "PIL"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"the data-loading suite needs {module}")
    pytester.makepyfile(test_dataloader=SUITE.read_text())
    monkeypatch.setenv("GPUBENCH_HEARTBEAT_S", "0.5")
    return pytester


def saved_cells(pytester: pytest.Pytester) -> dict[str, dict[str, Any]]:
    document = json.loads((pytester.path / "out.json").read_text())
    return {b["name"]: b["extra_info"]["gpubench"] for b in document["benchmarks"]}


def test_heavy_decoding_starves_the_loop_and_the_cell_says_so(suite: pytest.Pytester,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # 768 px JPEGs: a batch of 16 takes several times the tiny model's step to decode on one core
    monkeypatch.setenv("GPUBENCH_DATALOADER_SOURCE_PX", "768")
    result = suite.runpytest_subprocess(*ARGS, "-k", "workers0")
    result.assert_outcomes(passed=1)
    lines = result.stdout.lines
    assert any(line.startswith("! test_dataloader_training[workers0-cpu] ") for line in lines), "\n".join(lines)
    # the note wraps at the terminal's width, its next lines indented: where depends on the figures in it
    first = next(i for i, line in enumerate(lines) if line.startswith("! test_dataloader_training[workers0-cpu]: "))
    note = " ".join(" ".join(lines[first:first + 3]).split())
    assert "cpu-starved: CPU idle" in note and "waiting on the DataLoader (num_workers=0" in note
    # the slow phase spoke while it ran, and said where its time went (a share so far, whatever the loop was doing
    # at the instant of the beat)
    beats = [line for line in lines if "test_dataloader_training[workers0-cpu]: training, " in line]
    shares = [int(match.group(1)) for line in beats
              if (match := re.search(r"waited on the DataLoader (\d+)% of the loop so far", line))]
    assert shares and max(shares) > 50, "\n".join(lines)
    details = saved_cells(suite)["test_dataloader_training[workers0-cpu]"]
    assert any(flag.startswith("cpu-starved: CPU idle") for flag in details["flags"])
    assert details["metrics"]["device_idle_pct"] > 50
    assert details["idle_method"].startswith("host_clock")
    assert details["source_px"] == 768 and details["num_workers"] == 0


def test_a_fed_loop_is_not_flagged_and_every_cell_saves_its_throughput_and_idle_share(suite: pytest.Pytester) -> None:
    result = suite.runpytest_subprocess(*ARGS, "-k", "workers0 or workers2")
    result.assert_outcomes(passed=2)
    cells = saved_cells(suite)
    assert set(cells) == {"test_dataloader_training[workers0-cpu]", "test_dataloader_training[workers2-cpu]"}
    for name, details in cells.items():
        metrics = details["metrics"]
        # throughput by wall time only: a median step hides the loader's bursts
        assert metrics["samples_per_s"] > 0 and "items_per_s" not in metrics, name
        assert 0 <= metrics["device_idle_pct"] <= 100 and metrics["device_step_ms"] > 0, name
        assert details["cpu_cores_available"] >= 1 and details["timed_steps"] == 12, name
    # with one thread doing both, the 64 px decodes take a fraction of the model's step whatever else runs here
    fed = cells["test_dataloader_training[workers0-cpu]"]
    assert fed["metrics"]["device_idle_pct"] < 50
    assert not any(flag.startswith("cpu-starved") for flag in fed["flags"])
    assert not any("cpu-starved" in line for line in result.stdout.lines)
    # the table shows throughput and idle share beside the time
    header = next(line for line in result.stdout.lines if line.startswith("cell "))
    assert "samples/s" in header and "idle %" in header and "items/s" not in header
