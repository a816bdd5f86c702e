"""The gate judges across runs: against several saved runs, on round-level figures, with an `unstable`
verdict for cells whose runs disagree. Measured on this 2-core machine with real timings: A/A comparisons
flag nothing, a 25 % slower cell is never passed (regressed, or unstable where the VM spreads its rounds)."""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np
import pytest

from pytest_gpubench.gate import GatePolicy, History, judge, student_t_sf, welch_greater

SUITE = """
import os

import pytest


def python_loop(n):
    total = 0
    for i in range(n):
        total += i * i
    return total


def test_python_loop(gpubench):
    gpubench(python_loop, 20000)


def test_torch_matmul(gpubench):
    torch = pytest.importorskip("torch")
    # one thread: with two OpenMP threads on two cores, a neighbour on one core makes the other spin at the
    # barrier, and this product went from 65 us to 16 ms for a whole run (every round), which no gate can
    # tell from a regression
    torch.set_num_threads(1)
    # SLOWDOWN times the work as more products of the same size: a size off the BLAS kernel's tiles (206 for
    # 192 * 1.25 ** (1/3)) read 58 % slower, not 25 %, and spread its rounds
    products = round(4 * float(os.environ.get("SLOWDOWN", "1")))
    a = torch.randn(192, 192)

    def matmuls():
        for _ in range(products):
            torch.matmul(a, a)

    gpubench(matmuls, flops=products * 2 * 192**3, dtype="fp32")
"""
ROUNDS = ["--gpu=cpu", "--gpubench-rounds=5", "--gpubench-max-time=0.25", "--gpubench-min-time=0.05",
          "--gpubench-warmup=0.05", "-p", "no:cacheprovider"]
# 10 %: on a shared 2-core machine a Python loop's run median moves by several per cent with the neighbours'
# load; a 25 % slowdown is well clear of it
GATE = ["--benchmark-compare", "--gpubench-gate=10%"]


def test_student_t_and_welch_match_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    for t, df in [(0.0, 3), (1.2, 2.5), (2.9, 7), (-1.5, 12), (6.0, 40.3), (0.3, 1)]:
        assert math.isclose(student_t_sf(t, df), stats.t.sf(t, df), rel_tol=1e-9, abs_tol=1e-12)
    rng = np.random.default_rng(1)
    for _ in range(50):
        x, y = rng.normal(1.05, 0.03, rng.integers(2, 9)), rng.normal(1.0, 0.05, rng.integers(2, 16))
        expected = stats.ttest_ind(x, y, equal_var=False, alternative="greater").pvalue
        assert math.isclose(welch_greater(x, y), expected, rel_tol=1e-7, abs_tol=1e-12)


def history(*run_rounds: list[float]) -> History:
    medians = tuple(float(np.median(r)) for r in run_rounds)
    rounds = tuple(x for r in run_rounds for x in r)
    newest = tuple(float(x) for x in np.repeat(run_rounds[0], 4))
    return History(tuple(f"000{i + 1}" for i in range(len(run_rounds))), medians, rounds, newest)


POLICY = GatePolicy(0.05, 0.01, 3)


def test_judged_against_every_saved_run_on_round_figures() -> None:
    saved = history([1.00, 1.01, 0.99, 1.00, 1.02], [1.03, 1.04, 1.02, 1.03, 1.03], [0.98, 0.99, 0.98, 0.97, 0.99])
    # 6 % over the newest run but within 5 % of the slowest saved run: drift between runs, not a change
    drift = judge("c", [1.06] * 20, [1.06, 1.05, 1.07, 1.06, 1.06], saved, POLICY)
    assert drift.outcome == "unchanged"
    slower = judge("c", [1.25] * 20, [1.25, 1.24, 1.26, 1.25, 1.25], saved, POLICY)
    assert slower.outcome == "regressed" and slower.p_value is not None and slower.p_value < 1e-6
    assert "Welch p=" in slower.describe() and "evidence: 5 rounds against 15 of 3 runs" in slower.describe()
    noisy = history([1.0] * 5, [1.3] * 5)  # two saved runs 30 % apart: a 5 % gate cannot judge this cell
    assert judge("c", [1.40] * 20, [1.40] * 5, noisy, POLICY).outcome == "unstable"


def test_without_rounds_the_gate_says_its_evidence_is_one_run() -> None:
    one_run = History(("0001",), (1.0,), (1.0,), tuple(1.0 + 0.01 * (i % 3) for i in range(30)))
    verdict = judge("c", [1.2 + 0.01 * (i % 3) for i in range(30)], [], one_run, POLICY)
    assert verdict.outcome == "regressed"
    assert "raw samples of one run each; --gpubench-rounds gives evidence across runs" in verdict.describe()


class NeighbourLoad:
    """The CPU time others took while a block ran: every core's non-idle time from /proc/stat (steal
    included: a hypervisor's other guests take it) less this process's own. A load average alone missed a CI
    run whose matmul cell read 10 % slower in one run: it lags by a minute and does not see steal."""

    def __init__(self) -> None:
        self.cores_busy = 0.0  # others' core-seconds per second of wall time
        self.steal = 0.0  # the share of the machine's time its hypervisor gave elsewhere

    @staticmethod
    def _machine() -> tuple[float, float, float]:
        fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle, iowait
        steal = fields[7] if len(fields) > 7 else 0
        tick = os.sysconf("SC_CLK_TCK")
        return (sum(fields[:8]) - idle) / tick, steal / tick, sum(fields[:8]) / tick

    def __enter__(self) -> NeighbourLoad:
        self._start = (self._machine(), os.times(), time.monotonic())
        self._load_before = os.getloadavg()[0]
        return self

    def __exit__(self, *exc: object) -> None:
        (busy0, steal0, all0), times0, wall0 = self._start
        busy1, steal1, all1 = self._machine()
        times1 = os.times()
        wall = max(time.monotonic() - wall0, 1e-3)
        own = (times1.user + times1.system + times1.children_user + times1.children_system
               - times0.user - times0.system - times0.children_user - times0.children_system)
        self.cores_busy = max(0.0, (busy1 - busy0) - own) / wall
        self.steal = (steal1 - steal0) / max(all1 - all0, 1e-3)

    @property
    def busy(self) -> bool:
        """Others kept half a core busy beside this test (which runs one process at a time: a CPU hog beside a
        Python loop on 2 cores spread its rounds 17 % apart), or the hypervisor took over 5 % of the time, or
        the load average said the machine was loaded when the block began."""
        loaded_before = self._load_before > 1.5 + 0.25 * (len(os.sched_getaffinity(0)) - 2)
        return self.cores_busy > 0.5 or self.steal > 0.05 or loaded_before

    def __str__(self) -> str:
        return f"others used {self.cores_busy:.2f} cores, steal {self.steal:.1%}"


def verdicts(result: pytest.RunResult) -> str:
    return "\n".join(line for line in result.stdout.lines if line.startswith("test_suite.py::"))


def test_ten_a_a_comparisons_flag_nothing_and_a_slower_cell_fails_every_time(pytester: pytest.Pytester,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    pytester.makepyfile(test_suite=SUITE)
    for _ in range(3):  # the saved runs a comparison is judged against
        pytester.runpytest(*ROUNDS, "--benchmark-autosave").assert_outcomes(passed=2)
    judged = {"A/A": 0, "slowdown": 0}
    for _ in range(10):  # each saved in turn, as a main branch's CI saves its runs: the baselines roll
        with NeighbourLoad() as load:
            result = pytester.runpytest(*ROUNDS, *GATE, "--benchmark-autosave")
        if load.busy:
            continue  # others' load slows a whole run as a regression would: no gate can tell them apart
        assert result.ret == pytest.ExitCode.OK, f"{load}\n{result.stdout.str()}"
        assert "regressed" not in result.stdout.str(), f"{load}\n{verdicts(result)}"
        judged["A/A"] += 1
    monkeypatch.setenv("SLOWDOWN", "1.25")  # the stable cell, the matmul, does 25 % more work
    caught, spread_out = 0, []
    for attempt in range(3):
        with NeighbourLoad() as load:
            result = pytester.runpytest(*ROUNDS, *GATE, f"--benchmark-json=slow{attempt}.json")
        # the gate lists only cells it did not find unchanged: the slowed cell must be listed every time
        verdict = next((line for line in result.stdout.lines if line.startswith("test_suite.py::test_torch_matmul")), "")
        loop = next((line for line in result.stdout.lines if line.startswith("test_suite.py::test_python_loop")), "")
        if load.busy:
            continue  # a neighbour slows or spreads any cell's rounds: neither verdict says anything then
        assert " regressed: " not in loop, f"an A/A comparison flagged; {load}\n{verdicts(result)}"
        if not verdict:  # unchanged: right only where the rule says so, slower than every saved run by > 10 %
            saved_runs = sorted((pytester.path / ".benchmarks").rglob("*.json"))[-3:]
            before = [next(b["stats"]["median"] for b in json.loads(f.read_text())["benchmarks"]
                           if b["name"] == "test_torch_matmul[cpu]") for f in saved_runs]
            now = next(b["stats"]["median"] for b in json.loads((pytester.path / f"slow{attempt}.json").read_text())[
                "benchmarks"] if b["name"] == "test_torch_matmul[cpu]")
            assert now <= 1.10 * max(before), f"a slower cell passed as unchanged; {load}\n{verdicts(result)}"
            # this VM's runs themselves moved by that much (seen): no gate across runs can catch 25 % then
            spread_out.append(f"saved runs {[round(m * 1e6) for m in before]}, now {round(now * 1e6)}")
            continue
        if " unstable: " in verdict:
            # the gate's own answer where this VM spreads a run's rounds (seen with nothing else running: round
            # medians of 507..766 us in one run): checked here from the saved rounds, not taken on its word
            saved = json.loads((pytester.path / f"slow{attempt}.json").read_text())
            rounds = next(b for b in saved["benchmarks"] if b["name"] == "test_torch_matmul[cpu]")[
                "extra_info"]["gpubench"]["round_medians_s"]
            low, high = np.percentile(rounds, [25, 75])
            assert high / low - 1 > 0.15, f"called unstable with rounds {rounds}\n{verdicts(result)}"
            spread_out.append(f"rounds {[round(r * 1e6) for r in rounds]}")
            continue
        assert "evidence: 5 rounds against 15 of 3 runs" in verdict
        assert "FAILED test_suite.py::test_torch_matmul[cpu] - gpubench gate" in result.stdout.str()
        result.assert_outcomes(passed=1, failed=1)
        caught += 1
    judged["slowdown"] = caught
    if not caught and spread_out:
        pytest.skip(f"this VM spread the matmul's rounds past 15 %, or its saved runs past 10 %, in every quiet run "
                    f"(medians, us: {spread_out}): the gate rightly judged none, and this run shows nothing about "
                    "catching")
    if not all(judged.values()):  # a test whose every comparison was excused has shown nothing: say so
        pytest.skip(f"others loaded this machine through the comparisons; judged: {judged}")


def test_a_change_under_the_timers_resolution_is_not_a_regression() -> None:
    # an H200's 16-element add read 4.096 us in three saved runs and 4.32 us in a fourth: +5.5 %, but 0.22 us,
    # under CUDA events' 0.5 us resolution (seen in docs/RESULTS.md, section 8)
    saved = history([4.096e-6] * 3, [4.096e-6] * 3, [4.096e-6] * 3)
    assert judge("c", [4.32e-6] * 20, [4.32e-6, 4.30e-6, 4.33e-6], saved, POLICY).outcome == "regressed"
    verdict = judge("c", [4.32e-6] * 20, [4.32e-6, 4.30e-6, 4.33e-6], saved, POLICY, resolution_s=0.5e-6)
    assert verdict.outcome == "unchanged" and "within the timer's resolution" in verdict.describe()
