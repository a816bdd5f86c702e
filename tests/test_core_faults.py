"""Faults of the core, with real processes: an xdist worker that dies keeps what it had reported; a
baseline the gate cannot use stops the run with one line; a GPU another process holds is waited for out
loud, within a limit; a gate in the config applies only to runs that compare."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_gpubench.executors.local import hold_gpus
from pytest_gpubench.hardware import LocalGpu

FAST = ["--gpu=cpu", "--gpubench-max-time=0.3", "--gpubench-min-time=0.05", "--gpubench-warmup=0.01",
        "-p", "no:cacheprovider"]


def saved(pytester: pytest.Pytester) -> list[Path]:
    return sorted((pytester.path / ".benchmarks").rglob("*.json"))


def test_a_crashed_worker_loses_only_the_cell_it_was_running(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile(test_crash="""
        import os
        import pytest

        @pytest.mark.parametrize("i", range(8))
        def test_ok(gpubench, i):
            gpubench.record([0.001 + i / 1e6] * 10)

        def test_z_crash(gpubench):
            os._exit(1)
    """)
    result = pytester.runpytest_subprocess(*FAST, "-n", "1", "--benchmark-autosave")
    result.assert_outcomes(passed=8, failed=1)
    assert "worker 'gw0' crashed while running 'test_crash.py::test_z_crash[cpu]'" in result.stdout.str()
    (run,) = saved(pytester)
    names = sorted(b["fullname"] for b in json.loads(run.read_text())["benchmarks"])
    assert names == [f"test_crash.py::test_ok[{i}-cpu]" for i in range(8)]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        pytest.param("{not json", "not JSON (", id="not-json"),
        pytest.param('{"benchmarks": [{"fullname": "x", "stats": []}]}',
                     "not a pytest-benchmark run: benchmarks[0] (x) has no 'stats' object", id="wrong-shape"),
        pytest.param('{"machine_info": {}, "benchmarks": [{"fullname": "test_one.py::test_one[cpu]", "stats": {"data": "abc"}}]}',
                     "not a pytest-benchmark run: benchmarks[0] (test_one.py::test_one[cpu]) has stats.data that are "
                     "not numbers", id="data-not-numbers"),
    ],
)
def test_a_newest_baseline_the_gate_cannot_use_is_one_line_and_a_failure(
    pytester: pytest.Pytester, content: str, problem: str
) -> None:
    pytester.makepyfile(test_one="def test_one(gpubench):\n    gpubench.record([0.001] * 10)\n")
    pytester.runpytest(*FAST, "--benchmark-autosave").assert_outcomes(passed=1)
    (good,) = saved(pytester)
    bad = good.with_name("0002_broken.json")
    bad.write_text(content)
    result = pytester.runpytest(*FAST, "--benchmark-compare", "--gpubench-gate=5%")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert len(errors) == 1 and f"baseline {bad}: {problem}" in errors[0], result.stderr.lines
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_a_gate_in_the_config_applies_only_to_runs_that_compare(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml('[tool.gpubench]\ngate = "5%"\n')
    pytester.makepyfile(test_one="def test_one(gpubench):\n    gpubench.record([0.001] * 10)\n")
    plain = pytester.runpytest(*FAST, "--benchmark-autosave")
    plain.assert_outcomes(passed=1)
    compared = pytester.runpytest(*FAST, "--benchmark-compare")
    compared.assert_outcomes(passed=1)
    assert "gpubench gate" in compared.stdout.str() and "1 unchanged" in compared.stdout.str()


ONE_H200 = "0, NVIDIA H200, 143771, GPU-aaaa, 580.159.04, 1980, 3201\n"


@pytest.fixture
def gpu_held_by_this_process(fake_nvidia_smi: Callable[[str], None]) -> Callable[[], threading.Event]:
    """A fake one-H200 host whose GPU this test process holds, as another cell would, until the returned
    event is set."""
    fake_nvidia_smi(ONE_H200)

    def hold() -> threading.Event:
        held, release = threading.Event(), threading.Event()

        def run() -> None:
            with hold_gpus([LocalGpu(0, "NVIDIA H200", 143771, "GPU-aaaa")], "test_other.py::test_holder[H200:1]"):
                held.set()
                release.wait(300)

        threading.Thread(target=run, daemon=True).start()
        assert held.wait(10)
        return release

    return hold


CELL_ON_H200 = "def test_cell(gpubench):\n    gpubench.record([0.001] * 10)\n"


def test_a_cell_waiting_for_a_held_gpu_says_for_which_and_who_holds_it(
    pytester: pytest.Pytester, fake_nvidia_smi: Callable[[str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("xdist")
    fake_nvidia_smi(ONE_H200)
    monkeypatch.setenv("GPUBENCH_HEARTBEAT_S", "0.5")
    pytester.makepyfile(test_cell=CELL_ON_H200)
    release = threading.Event()
    held = threading.Event()

    def hold() -> None:
        with hold_gpus([LocalGpu(0, "NVIDIA H200", 143771, "GPU-aaaa")], "test_other.py::test_holder[H200:1]"):
            held.set()
            release.wait(120)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert held.wait(10)
    process = subprocess.Popen([sys.executable, "-m", "pytest", "--gpu=H200:1", "-n", "1", "-p", "no:cacheprovider"],
                               cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    lines = []
    for line in process.stdout:  # live: the line must arrive while the lock is still held
        lines.append(line.rstrip("\n"))
        if "waiting for GPU GPU-aaaa" in line:
            release.set()
    process.wait(120)
    release.set()
    holder.join()
    waits = [line for line in lines if "waiting for GPU GPU-aaaa" in line]
    assert waits, "\n".join(lines)
    assert f"held by pid {os.getpid()}, cell test_other.py::test_holder[H200:1]" in waits[0]
    assert "1 passed" in lines[-1], lines[-1]


def test_a_lock_timeout_fails_the_cell_with_one_line(
    pytester: pytest.Pytester, gpu_held_by_this_process: Callable[[], threading.Event]
) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile(test_cell=CELL_ON_H200)
    release = gpu_held_by_this_process()
    try:
        result = pytester.runpytest_subprocess("--gpu=H200:1", "-n", "1", "-p", "no:cacheprovider",
                                               "--gpubench-lock-timeout=1")
    finally:
        release.set()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        f"*[[]gpu-busy[]] waited * s for GPU GPU-aaaa, held by pid {os.getpid()}, cell test_other.py::test_holder[[]H200:1[]]"
        " (--gpubench-lock-timeout 1 s)*"
    ])
