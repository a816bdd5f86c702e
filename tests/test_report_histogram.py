"""pytest-gpubench[histogram] (and the test extra) bring what pytest-benchmark's --benchmark-histogram imports:
the gpubench cells' histogram is drawn."""

from __future__ import annotations

import pytest
from report_support import require_module


def test_benchmark_histogram_draws_the_cells(pytester: pytest.Pytester) -> None:
    require_module("pygal", "histogram")
    require_module("pygaljs", "histogram")
    pytester.makepyfile(test_h="""
        import pytest

        @pytest.mark.parametrize("n", [1, 2])
        def test_h(gpubench, n):
            gpubench.record([0.001 * n * (1 + 0.01 * i) for i in range(10)])
    """)
    # in a process of its own: pygal imports the importlib_metadata backport (see require_module)
    result = pytester.runpytest_subprocess("--gpu=cpu", "-p", "no:cacheprovider", "--gpubench-report=no",
                                           "--benchmark-histogram=hist")
    result.assert_outcomes(passed=2)
    (svg,) = pytester.path.glob("hist*.svg")
    text = svg.read_text()
    assert text.startswith("<?xml") and "test_h[1-cpu]" in text and "test_h[2-cpu]" in text
