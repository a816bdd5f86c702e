"""Rounds and interleaving: a cell measured in several rounds, each set up and warmed anew; with drift in
the run (a cost that grows as it goes), interleaving the rounds of a comparison's variants recovers the
true ratio, and measuring them back to back does not."""

from __future__ import annotations

import json

import pytest

DRIFTING = """
import time
import pytest

T0 = time.monotonic()
GROWTH_PER_S = 0.2  # every cell gets 20 % slower per second of the run


def work(factor):
    time.sleep(0.004 * factor * (1 + GROWTH_PER_S * (time.monotonic() - T0)))


@pytest.mark.variants("baseline", "double")
def test_drift(gpubench, gpubench_variant):
    gpubench(work, 2.0 if gpubench_variant == "double" else 1.0)
"""
OPTIONS = ["--gpu=cpu", "--gpubench-max-time=0.3", "--gpubench-min-time=0.1", "--gpubench-warmup=0.01",
           "--gpubench-rounds=6", "-p", "no:cacheprovider"]


def speedup_of_double(pytester: pytest.Pytester, *extra: str) -> dict[str, object]:
    result = pytester.runpytest(*OPTIONS, *extra, "--benchmark-json=out.json")
    result.assert_outcomes(passed=2)
    document = json.loads((pytester.path / "out.json").read_text())
    for bench in document["benchmarks"]:  # every round's median is kept beside the merged samples
        assert len(bench["extra_info"]["gpubench"]["round_medians_s"]) == 6
    (comparison,) = document["gpubench"]["speedups"]["comparisons"]
    (row,) = comparison["variants"]
    assert row["variant"] == "double" and row["evidence"] == "6 rounds"
    return row


def test_interleaved_rounds_cancel_drift_that_back_to_back_rounds_do_not(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_drift=DRIFTING)
    true_speedup = 0.5  # "double" does twice the work
    back_to_back = speedup_of_double(pytester)
    interleaved = speedup_of_double(pytester, "--gpubench-interleave")
    assert abs(interleaved["speedup"] / true_speedup - 1) < 0.03, interleaved
    assert abs(back_to_back["speedup"] / true_speedup - 1) > 0.03, back_to_back
    assert interleaved["low"] <= true_speedup <= interleaved["high"], interleaved


def test_interleaving_needs_rounds_and_loadgroup_under_xdist(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_drift=DRIFTING)
    one_round = pytester.runpytest("--gpu=cpu", "--gpubench-interleave")
    assert one_round.ret == pytest.ExitCode.USAGE_ERROR
    assert "interleaving needs at least 2 rounds" in one_round.stderr.str()
    pytest.importorskip("xdist")
    parallel = pytester.runpytest("--gpu=cpu", "--gpubench-interleave", "--gpubench-rounds=2", "-n", "2")
    assert parallel.ret == pytest.ExitCode.USAGE_ERROR
    assert "add --dist loadgroup" in parallel.stderr.str()
