"""The report's plots: what each one draws, its axes and labels, read from the matplotlib figure itself; and
the files draw_plots saves."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_support import a_run, record, require_module

from pytest_gpubench.report.cells import RunView
from pytest_gpubench.report.plots import (baseline_figure, concurrency_figure, cost_figure, draw_plots,
                                          latency_cdf_figure, peak_share_figure, speedup_figure)


@pytest.fixture(autouse=True)
def _matplotlib() -> None:
    require_module("matplotlib", "report")


def test_latency_cdf_has_a_line_per_serving_cell_from_0_to_1() -> None:
    view = RunView.of(a_run())
    figure = latency_cdf_figure(list(view.cells))
    assert figure is not None
    (axes,) = figure.axes
    assert axes.get_title() == "Latency CDF per serving cell (TTFT)"
    assert axes.get_xlabel() == "TTFT per request (ms)"
    assert axes.get_ylabel() == "share of requests at or under"
    labels = [line.get_label() for line in axes.get_lines()]
    assert labels == [c.label for c in view.group("serving")]
    for line in axes.get_lines():
        x, y = line.get_xdata(), line.get_ydata()
        assert list(x) == sorted(x) and y[-1] == 1.0 and y[0] == pytest.approx(1 / 64)
        assert 20 < x[len(x) // 2] < 120  # milliseconds, not seconds


def test_ttft_and_tpot_against_concurrency() -> None:
    figure = concurrency_figure(list(RunView.of(a_run()).cells))
    assert figure is not None
    ttft, tpot = figure.axes
    assert ttft.get_xlabel() == tpot.get_xlabel() == "concurrency (requests in flight)"
    assert ttft.get_ylabel() == "TTFT (ms)" and tpot.get_ylabel() == "TPOT (ms)"
    assert ttft.get_xscale() == "log"
    assert [t.get_text() for t in ttft.get_xticklabels()] == ["1", "8"]  # the levels themselves, not powers of 2
    labels = sorted(line.get_label() for line in ttft.get_lines())
    # one series per engine, the concurrency taken out of its id; p50 and p99 each
    assert labels == ["test_serving[sglang-H200:1] p50", "test_serving[sglang-H200:1] p99",
                      "test_serving[vllm-H200:1] p50", "test_serving[vllm-H200:1] p99"]
    vllm_p50 = next(line for line in ttft.get_lines() if line.get_label() == "test_serving[vllm-H200:1] p50")
    assert list(vllm_p50.get_xdata()) == [1, 8]
    assert list(vllm_p50.get_ydata()) == pytest.approx([30 * 1.25, 30 * 3])


def test_speedup_bars_carry_their_intervals() -> None:
    view = RunView.of(a_run())
    figure = speedup_figure(view)
    assert figure is not None
    (axes,) = figure.axes
    assert axes.get_ylabel() == "speed-up over baseline (x), 95% interval"
    assert axes.get_title() == "Speed-up per commit and variant"
    assert [t.get_text() for t in axes.get_xticklabels()] == ["c1\ntest_kernel[c1-baseline-H200:1]"]
    bars = {container.get_label(): container for container in axes.containers if hasattr(container, "patches")}
    (comparison,) = view.comparisons
    for row in comparison.variants:
        (bar,) = bars[row.variant].patches
        assert bar.get_height() == pytest.approx(row.speedup)
    assert 1.9 < bars["human"].patches[0].get_height() < 2.1
    assert any(line.get_label() == "baseline" and list(line.get_ydata()) == [1.0, 1.0] for line in axes.get_lines())
    assert {text.get_text() for text in axes.texts} >= {f"{r.speedup:.2f}x" for r in comparison.variants}


def test_peak_share_and_cost_ranking() -> None:
    view = RunView.of(a_run())
    peaks = peak_share_figure(list(view.cells))
    assert peaks is not None
    (axes,) = peaks.axes
    assert axes.get_xlabel() == "% of the datasheet peak" and axes.get_xlim()[1] >= 100
    assert [t.get_text() for t in axes.get_yticklabels()][-1] == "test_add[H200:1] (memory)"  # 90.5 %: the top bar

    cost = cost_figure(list(view.cells))
    assert cost is not None
    (axes,) = cost.axes
    assert axes.get_title() == "Cost per 1k tokens (cheapest on top)"
    assert axes.get_xlabel() == "USD per 1,000 output tokens at the measured throughput"
    names = [t.get_text() for t in axes.get_yticklabels()]
    assert names[-1] == "test_serving[vllm-8-H200:1]"  # the most tokens a second: the cheapest
    widths = [bar.get_width() for bar in axes.patches]
    serving = {c.label: c for c in view.group("serving")}
    assert widths == pytest.approx([serving[name].cost.usd_per_1k_tokens for name in names])


def test_cost_ranking_without_tokens_ranks_what_cells_cost() -> None:
    cells = [record("t.py::test_a[H200:1]", [0.001] * 5), record("t.py::test_b[H200:2]", [0.001] * 5,
                                                                   target="H200:2", usd_per_hour=9.08)]
    figure = cost_figure(list(RunView.of(cells).cells))
    assert figure is not None
    (axes,) = figure.axes
    assert axes.get_title() == "Cost of each cell (dearest on top)"
    assert [t.get_text() for t in axes.get_yticklabels()] == ["test_a[H200:1]", "test_b[H200:2]"]
    assert [bar.get_width() for bar in axes.patches] == pytest.approx([10 * 4.54 / 3600, 10 * 9.08 / 3600])


def test_run_against_its_baseline() -> None:
    old = [record("t.py::test_a[H200:1]", [0.0010] * 5), record("t.py::test_b[H200:1]", [0.0020] * 5),
           record("t.py::test_gone[H200:1]", [0.0020] * 5)]
    new = [record("t.py::test_a[H200:1]", [0.0011] * 5), record("t.py::test_b[H200:1]", [0.0015] * 5),
           record("t.py::test_new[H200:1]", [0.0020] * 5)]
    figure = baseline_figure(RunView.of(new), RunView.of(old), "0001_main.json")
    assert figure is not None
    (axes,) = figure.axes
    assert axes.get_xlabel() == "change of the median against 0001_main.json (%)"
    assert [t.get_text() for t in axes.get_yticklabels()] == ["test_b[H200:1]", "test_a[H200:1]"]
    assert [bar.get_width() for bar in axes.patches] == pytest.approx([-25.0, 10.0])
    assert [bar.get_facecolor()[:3] for bar in axes.patches] == [pytest.approx((0.172, 0.627, 0.172), abs=0.01),
                                                                 pytest.approx((0.839, 0.153, 0.157), abs=0.01)]


def test_nothing_to_show_draws_nothing(tmp_path: Path) -> None:
    view = RunView.of([record("t.py::test_a[cpu]", [0.001] * 5, target="cpu", usd_per_hour=None)])
    assert latency_cdf_figure(list(view.cells)) is None
    assert concurrency_figure(list(view.cells)) is None
    assert speedup_figure(view) is None
    assert cost_figure(list(view.cells)) is None
    assert draw_plots(view, tmp_path / "plots") == []
    assert not (tmp_path / "plots").exists()


def test_draw_plots_saves_png_files(tmp_path: Path) -> None:
    view = RunView.of(a_run())
    plots = draw_plots(view, tmp_path / "plots", RunView.of(a_run()[:2]), "old.json")
    assert [p.file for p in plots] == ["plots/latency_cdf.png", "plots/serving_vs_concurrency.png",
                                       "plots/speedups.png", "plots/peak_share.png", "plots/cost.png",
                                       "plots/run_vs_baseline.png"]
    for plot in plots:
        data = (tmp_path / plot.file).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
