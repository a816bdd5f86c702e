"""Fan-out with xdist and the regression gate: one merged pytest-benchmark run, a gate that cannot pass
silently, every baseline case with an explicit outcome, and GPUs that no two workers share."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("xdist")

FAST = ["--gpu=cpu", "--gpubench-max-time=0.6", "--gpubench-min-time=0.15", "--gpubench-warmup=0.02",
        "-p", "no:cacheprovider"]
PARALLEL = [*FAST, "-n", "2"]
GATE = ["--benchmark-compare", "--gpubench-gate=5%"]

# Recorded samples with 2 % noise, drawn anew in every run: these tests are about what workers send, what
# the controller saves and how the gate decides, so the samples must not move with the load of the 2-core
# machine the way a busy loop's do (the gate's behaviour on real timings across runs is measured elsewhere).
SUITE = """
import os
import random

import pytest


def samples(median_s):
    # mirrored around the median, so the median itself is exact and only the spread is random
    noise = [abs(random.gauss(0.0, 0.02)) for _ in range(15)]
    return [median_s] + [median_s * (1 + d) for d in noise] + [median_s * (1 - d) for d in noise]


@pytest.mark.parametrize("i", range(3))
def test_steady(gpubench, i):
    gpubench.record(samples(0.001))


def test_changes(gpubench):
    gpubench.record(samples(0.001 * float(os.environ.get("SLOWDOWN", "1"))))
"""


def saved_runs(pytester: pytest.Pytester) -> list[Path]:
    return sorted((pytester.path / ".benchmarks").rglob("*.json"))


@pytest.fixture
def baseline(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest(*PARALLEL, "--benchmark-autosave")
    result.assert_outcomes(passed=4)
    return pytester


def output_of(result: pytest.RunResult) -> str:
    return result.stdout.str() + "\n" + result.stderr.str()


def test_parallel_run_saves_one_run_with_every_cell_and_its_raw_samples(baseline: pytest.Pytester) -> None:
    (saved,) = saved_runs(baseline)
    document = json.loads(saved.read_text())
    assert sorted(b["fullname"] for b in document["benchmarks"]) == [
        "test_suite.py::test_changes[cpu]",
        "test_suite.py::test_steady[0-cpu]",
        "test_suite.py::test_steady[1-cpu]",
        "test_suite.py::test_steady[2-cpu]",
    ]
    for bench in document["benchmarks"]:
        assert len(bench["stats"]["data"]) == bench["stats"]["rounds"] >= 10
        assert abs(bench["stats"]["median"] - 0.001) < 0.0002
        assert bench["params"]["gpubench_target"] == "cpu"
    assert document["machine_info"]["gpu"]["count"] == 0


def test_parallel_run_does_not_claim_benchmarks_were_disabled(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest(*PARALLEL, "--benchmark-json=out.json")
    result.assert_outcomes(passed=4)
    assert "automatically disabled" not in output_of(result)
    result.stdout.fnmatch_lines(["*gpubench: 4 cells*"])
    assert len(json.loads((pytester.path / "out.json").read_text())["benchmarks"]) == 4


def test_twenty_percent_slower_cell_fails_as_a_test_with_old_new_and_p_value(
    baseline: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLOWDOWN", "1.2")
    result = baseline.runpytest(*PARALLEL, *GATE, "--junitxml=junit.xml")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["FAILED test_suite.py::test_changes[[]cpu[]] - gpubench gate*"])
    line = next(x for x in result.stdout.lines if x.startswith("gpubench gate: test_suite.py::test_changes[cpu]"))
    assert "median 1 ms -> 1.2 ms (+20.00%)" in line and "Mann-Whitney p=" in line and "threshold 5.00%" in line
    junit = (baseline.path / "junit.xml").read_text()
    assert 'name="test_changes[cpu]"' in junit and "regressed: median" in junit
    summary = (baseline.path / "gpubench-summary.md").read_text()
    assert "| `test_suite.py::test_changes[cpu]` |" in summary and "❌ regressed" in summary
    assert summary.count("✅ unchanged") == 3


def test_pytest_benchmark_compare_fail_works_under_xdist(baseline: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLOWDOWN", "1.2")
    result = baseline.runpytest(*PARALLEL, "--benchmark-compare", "--benchmark-compare-fail=median:5%")
    assert result.ret != 0
    regressed = [x for x in output_of(result).splitlines() if "PercentageRegressionCheck" in x]
    assert len(regressed) == 1 and "test_changes[cpu]" in regressed[0]


def test_ten_unchanged_comparisons_never_fail(baseline: pytest.Pytester) -> None:
    for _ in range(10):
        result = baseline.runpytest(*PARALLEL, *GATE)
        assert result.ret == 0, output_of(result)
        result.assert_outcomes(passed=4)
        assert "regressed" not in result.stdout.str()


def test_first_ci_run_with_no_baseline_warns_saves_and_passes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest(*PARALLEL, *GATE, "--benchmark-autosave")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["4 no-baseline", "test_suite.py::test_changes[[]cpu[]]: no-baseline: --benchmark-compare found no saved run"])
    assert len(saved_runs(pytester)) == 1
    assert "no-baseline" in (pytester.path / "gpubench-summary.md").read_text()


def test_new_missing_and_newly_failing_cells_each_get_their_outcome(baseline: pytest.Pytester) -> None:
    baseline.makepyfile(
        test_suite="""
        import pytest

        @pytest.mark.parametrize("i", range(2))
        def test_steady(gpubench, i):
            gpubench.record([0.001] * 20)

        def test_changes(gpubench):
            raise RuntimeError("server failed to start")

        def test_brand_new(gpubench):
            gpubench.record([0.001] * 20)
        """
    )
    result = baseline.runpytest(*PARALLEL, *GATE)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=3, failed=1)
    lines = result.stdout.lines
    assert "1 failed, 1 missing, 1 new, 2 unchanged" in lines
    assert any("test_changes[cpu]: failed: new failure: 0001_" in x for x in lines)
    assert any("test_steady[2-cpu]: missing: in 0001_" in x for x in lines)
    summary = (baseline.path / "gpubench-summary.md").read_text()
    assert "🆕 new" in summary and "➖ missing" in summary and "❌ failed" in summary


def test_baseline_from_other_hardware_is_not_gated(baseline: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    (saved,) = saved_runs(baseline)
    document = json.loads(saved.read_text())
    document["machine_info"]["cpu"]["brand_raw"] = "Some Other CPU"
    saved.write_text(json.dumps(document))
    monkeypatch.setenv("SLOWDOWN", "1.2")
    result = baseline.runpytest(*PARALLEL, *GATE)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["4 different-hardware", "*test_changes[[]cpu[]]: different-hardware: baseline measured on Some Other CPU*"])


def test_too_few_samples_cannot_fail_a_cell(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_r="import os\ndef test_r(gpubench):\n    gpubench.record([float(os.environ.get('T', '0.001'))] * 3)\n")
    pytester.runpytest(*FAST, "--benchmark-autosave").assert_outcomes(passed=1)
    monkeypatch.setenv("T", "0.002")
    result = pytester.runpytest(*FAST, *GATE)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["1 too-few-samples"])


def test_summary_goes_to_github_step_summary_when_ci_sets_it(baseline: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    step_summary = baseline.path / "step-summary.md"
    step_summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
    result = baseline.runpytest(*PARALLEL, *GATE)
    assert result.ret == 0
    text = step_summary.read_text()
    assert text.startswith("earlier step\n") and "## gpubench regression gate" in text
    assert not (baseline.path / "gpubench-summary.md").exists()


def test_gate_without_a_baseline_option_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest(*FAST, "--gpubench-gate=5%")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [x for x in result.stderr.lines if x.strip()]
    assert errors == ["ERROR: --gpubench-gate needs a baseline; add --benchmark-compare (the newest saved run) or --benchmark-compare=NUM"]


# --- GPUs per worker, on a host that a fake nvidia-smi describes ------------------------------------

GPU_SUITE = """
import os
import time

import pytest


@pytest.mark.parametrize("i", range(4))
def test_cell(gpubench, i):
    time.sleep(0.2)  # hold the GPUs a while, so overlapping holds would show
    gpubench.extra_info["visible"] = os.environ["CUDA_VISIBLE_DEVICES"]
    gpubench.record([0.001] * 5)
"""


def cells(pytester: pytest.Pytester) -> list[dict]:
    return [b["extra_info"]["gpubench"] for b in json.loads((pytester.path / "out.json").read_text())["benchmarks"]]


def test_each_worker_gets_its_own_gpu(pytester: pytest.Pytester, host_with_two_h200: None) -> None:
    pytester.makepyfile(test_gpu=GPU_SUITE)
    result = pytester.runpytest_subprocess("--gpu=H200:1", "-n", "2", "-p", "no:cacheprovider", "--benchmark-json=out.json")
    result.assert_outcomes(passed=4)
    found = cells(pytester)
    assert len(found) == 4
    for cell in found:
        assert cell["gpu_uuids"] == [cell["visible"]]  # the cell ran on exactly what its worker could see
    assert {cell["visible"] for cell in found} == {"GPU-aaaa", "GPU-bbbb"}  # and the two workers saw different GPUs


def test_cells_that_need_every_gpu_wait_for_each_other(pytester: pytest.Pytester, host_with_two_h200: None) -> None:
    pytester.makepyfile(test_gpu=GPU_SUITE)
    result = pytester.runpytest_subprocess("--gpu=H200:2", "-n", "2", "-p", "no:cacheprovider", "--benchmark-json=out.json")
    result.assert_outcomes(passed=4)
    holds = sorted((c["gpus_held_from"], c["gpus_held_until_at_least"], c["gpus_waited_s"]) for c in cells(pytester))
    assert len(holds) == 4
    for (_, end, _), (start, _, _) in zip(holds, holds[1:]):
        assert end <= start, holds  # no two cells held the GPUs at once
    assert sum(waited for _, _, waited in holds) > 0.1  # and someone really waited


def test_n_auto_starts_one_worker_per_gpu_slot(pytester: pytest.Pytester, host_with_two_h200: None) -> None:
    pytester.makepyfile(test_gpu=GPU_SUITE)
    one_gpu = pytester.runpytest_subprocess("--gpu=H200:1", "-n", "auto", "-p", "no:cacheprovider")
    one_gpu.assert_outcomes(passed=4)
    one_gpu.stdout.fnmatch_lines(["*created: 2/2 workers*"])
    two_gpus = pytester.runpytest_subprocess("--gpu=H200:2", "-n", "auto", "-p", "no:cacheprovider")
    two_gpus.assert_outcomes(passed=4)
    two_gpus.stdout.fnmatch_lines(["*created: 1/1 worker*"])


def test_cpu_cells_of_each_worker_keep_to_their_own_cores(pytester: pytest.Pytester) -> None:
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("needs 2 CPU cores")
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_subprocess(*PARALLEL, "--benchmark-json=out.json")
    result.assert_outcomes(passed=4)
    benchmarks = json.loads((pytester.path / "out.json").read_text())["benchmarks"]
    by_core_set = {tuple(b["extra_info"]["gpubench"]["cpu_cores"]) for b in benchmarks}
    assert len(by_core_set) == 2, by_core_set  # two workers, each on its own share
    first, second = by_core_set
    assert not set(first) & set(second) and len(first) == len(second) == len(cores) // 2
    assert "share cores" not in result.stdout.str()


def test_more_workers_than_cores_is_said_in_one_line(pytester: pytest.Pytester) -> None:
    cores = len(os.sched_getaffinity(0))
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_subprocess(*FAST, "-n", str(cores + 1))
    result.assert_outcomes(passed=4)
    assert (f"gpubench: -n {cores + 1} on {cores} CPU cores: the workers' CPU cells share cores and slow each other "
            f"down; use -n {cores} or fewer for CPU figures") in result.stdout.lines
