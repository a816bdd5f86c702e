"""The bench suites' cells that need hardware a host lacks skip with a reason that says what they need."""

from __future__ import annotations

from pathlib import Path

import pytest

SUITES = Path(__file__).resolve().parent.parent / "bench_suites"


def test_all_reduce_cells_on_the_cpu_skip_and_say_they_need_two_gpus(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(str(SUITES / "test_collectives.py"), "--gpu=cpu", "-rs",
                                           "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=18)  # all-reduce, all-gather, reduce-scatter at 6 sizes each
    result.stdout.fnmatch_lines(["*an all-reduce needs a target of 2 or more GPUs (e.g. --gpu H200:8); cpu has 0*"])
