"""Saving a run and comparing the next with pytest-benchmark's own options gates on gpubench cells."""

from __future__ import annotations

import json

import pytest

FAST = ["--gpubench-max-time=1", "--gpubench-min-time=0.2", "--gpubench-warmup=0.05", "--gpu=cpu", "-p", "no:cacheprovider"]

# Recorded samples, not timed ones: these tests are about saving and comparing, and a busy loop's median
# moves by more than 5 % when the 2-core machine is loaded (the gate across runs is tested elsewhere).
SUITE = """
import os


def samples(median_s):
    return [median_s * (1 + 0.004 * ((i * 7) % 5 - 2)) for i in range(20)]


def test_steady(gpubench):
    gpubench.record(samples(0.002))


def test_changes(gpubench):
    gpubench.record(samples(0.002 * float(os.environ.get("SLOWDOWN", "1"))))
"""


@pytest.fixture
def saved_run(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest(*FAST, "--benchmark-autosave")
    result.assert_outcomes(passed=2)
    return pytester


def test_unchanged_run_passes_the_gate(saved_run: pytest.Pytester) -> None:
    result = saved_run.runpytest(*FAST, "--benchmark-compare", "--benchmark-compare-fail=median:5%")
    assert result.ret == 0, result.stdout.str()
    result.stderr.fnmatch_lines(["*Comparing against benchmarks from*0001_*"])
    assert "Performance has regressed" not in result.stdout.str() + result.stderr.str()


def test_twenty_percent_slower_cell_fails_the_gate_by_name(saved_run: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLOWDOWN", "1.2")
    result = saved_run.runpytest(*FAST, "--benchmark-compare", "--benchmark-compare-fail=median:5%")
    assert result.ret != 0
    output = result.stdout.str() + result.stderr.str()
    assert "Performance has regressed" in output
    regressed = [line for line in output.splitlines() if "PercentageRegressionCheck" in line]
    assert len(regressed) == 1, output
    assert "test_changes[cpu]" in regressed[0] and "median" in regressed[0]


def test_saved_run_is_comparable_with_the_pytest_benchmark_command(saved_run: pytest.Pytester) -> None:
    saved = sorted((saved_run.path / ".benchmarks").rglob("0001_*.json"))
    assert len(saved) == 1
    document = json.loads(saved[0].read_text())
    names = sorted(b["fullname"] for b in document["benchmarks"])
    assert names == ["test_suite.py::test_changes[cpu]", "test_suite.py::test_steady[cpu]"]
    for bench in document["benchmarks"]:
        assert len(bench["stats"]["data"]) == bench["stats"]["rounds"] >= 10
        assert abs(bench["stats"]["median"] - 0.002) < 0.0005
    result = saved_run.run("pytest-benchmark", "--storage", str(saved_run.path / ".benchmarks"), "compare", "0001")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*test_changes[[]cpu[]]*"])
    result.stdout.fnmatch_lines(["*test_steady[[]cpu[]]*"])
