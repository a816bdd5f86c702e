"""The terminal's gpubench table: one table in parts per group, units per group, serving percentiles and
throughput, speed-ups with intervals, flagged cells marked, 120 columns unless -v; printed before
pytest-benchmark's table, with the report folder's path as the run's last line."""

from __future__ import annotations

import re

import pytest
from report_support import a_run, record, serving_metrics

from pytest_gpubench.record import CellResult
from pytest_gpubench.report.cells import RunView
from pytest_gpubench.report.terminal import DEFAULT_WIDTH, summary_lines


def parts(lines: list[str]) -> dict[str, list[str]]:
    """The table's parts by title (the line before each header), each the lines up to the next blank."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lines:
        if not line:
            current = None
        elif current is None:
            current = found.setdefault(line, [])
        else:
            current.append(line)
    return found


def test_groups_units_and_columns() -> None:
    records = a_run()
    lines = summary_lines([CellResult(r) for r in records])
    assert all(len(line) <= DEFAULT_WIDTH for line in lines), max(lines, key=len)
    found = parts(lines)
    titles = list(found)
    assert titles[:4] == ["kernels: median in ms", "collectives: median in ms", "serving: latencies in ms",
                          "variants of commit c1: median in ms, speed-up = baseline time / variant time"]

    kernels = found["kernels: median in ms"]
    assert kernels[0].split() == ["cell", "median", "ms", "stdrel", "samples", "TFLOP/s", "%peak", "GB/s", "%peak",
                                  "BW", "$"]
    matmul = next(row for row in kernels if row.startswith("test_matmul[bf16-H200:1]"))
    cells = RunView.of(records).by_nodeid()
    median_ms = cells["bench/test_matmul.py::test_matmul[bf16-H200:1]"].result.summary.median * 1e3
    assert matmul.split()[1] == f"{median_ms:.3f}" and "687.0" in matmul.split() and "$0.0126" in matmul.split()
    cpu = next(row for row in kernels if row.startswith("test_matmul[fp32-cpu]"))
    cpu_ms = cells["bench/test_matmul.py::test_matmul[fp32-cpu]"].result.summary.median * 1e3
    assert cpu.split()[1] == f"{cpu_ms:.1f}" and cpu.split()[-1] == "-"  # the group's unit; a CPU has no price

    serving = found["serving: latencies in ms"]
    assert serving[0].split() == ["cell", "conc", "TTFT", "p50/p99", "TPOT", "p50/p99", "ITL", "p50/p99",
                                  "out", "tok/s", "req/s", "failed", "$/1k", "tok"]
    vllm8 = next(row for row in serving if row.startswith("test_serving[vllm-8-H200:1]")).split()
    assert vllm8[1:5] == ["8", "90.0/120", "16.0/21.3", "15.5/20.6"]
    assert vllm8[5] == f"{900 * 8 ** 0.8:,.0f}"

    variants = found["variants of commit c1: median in ms, speed-up = baseline time / variant time"]
    assert variants[0].split() == ["cell", "variant", "median", "ms", "GB/s", "speed-up", "95%", "interval", "verdict"]
    assert variants[1].split()[:3] == ["test_kernel[c1-baseline-H200:1]", "baseline", "(baseline)"]
    human = next(row for row in variants if " human " in row).split()
    assert human[0] == "test_kernel[c1-human-H200:1]" and 1.9 < float(human[4].rstrip("x")) < 2.1
    assert re.fullmatch(r"\[\d\.\d{3},", human[5]) and human[-1] == "improved"
    assert any(line.startswith("human: over 1 commit, 1 comparison: 1 improved") for line in variants)

    view = RunView.of(records)
    assert lines[-1].startswith(f"cost: ${view.cost.usd:.2f} for ")


def test_long_ids_give_way_to_fit_120_columns_and_verbose_shows_them_whole() -> None:
    long_id = "t.py::test_x[" + "a-very-long-parameter-" * 6 + "H200:1]"
    records = [record(long_id, [0.001] * 20, metrics={"tflops": 1.0, "gbps": 2.0, "pct_peak_gbps": 3.0}),
               record("t.py::test_y[H200:1]", [0.002] * 20)]
    short = summary_lines([CellResult(r) for r in records])
    assert all(len(line) <= DEFAULT_WIDTH for line in short)
    row = next(line for line in short if line.startswith("test_x["))
    assert "\u2026" in row and row.split()[0].endswith("H200:1]")  # the middle goes, the target stays

    wide = summary_lines([CellResult(r) for r in records], verbose=True)
    assert any(line.startswith(long_id.split("::")[1]) for line in wide)
    header = next(line for line in wide if line.startswith("cell"))
    assert "p99 ms" in header and "timer" in header and "stopped because" in header


def test_flagged_cells_are_marked_with_why() -> None:
    records = [record("t.py::test_thin[H200:1]", [0.01, 0.03, 0.001, 0.05], stdrel_target=0.005, min_samples=10)]
    lines = summary_lines([CellResult(r) for r in records])
    assert any(line.startswith("! test_thin[H200:1] ") for line in lines)
    assert any(line.startswith("! test_thin[H200:1]: noisy: stdrel") and "few samples: 4 < 10" in line
               for line in lines)


SUITE = """
import os
import pytest

@pytest.mark.parametrize("size", [1, 2])
def test_kernel(gpubench, size):
    gpubench.record([0.001 * size * (1 + 0.001 * i) for i in range(21)], items=1000)
"""


def test_table_before_pytest_benchmarks_and_the_report_path_last(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest("--gpu=cpu", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    lines = result.stdout.lines
    ours = next(i for i, line in enumerate(lines) if re.fullmatch(r"-+ gpubench: 2 cells -+", line))
    theirs = next(i for i, line in enumerate(lines) if re.fullmatch(r"-+ benchmark: 2 tests -+", line))
    report = next(i for i, line in enumerate(lines) if line.startswith("gpubench: report in "))
    assert ours < theirs < report
    assert lines[report] == (f"gpubench: report in {pytester.path / 'gpubench-report' / 'index.html'} "
                             "(report.md, results.csv)")
    assert re.fullmatch(r"=+ 2 passed in .* =+", lines[report + 1])
    assert lines[ours + 1:ours + 3] == ["", "kernels: median in ms"]
    assert lines[ours + 3].split() == ["cell", "median", "ms", "stdrel", "samples", "items/s"]
    row = lines[ours + 4].split()
    assert row[:2] == ["test_kernel[1-cpu]", "1.010"] and row[3:] == ["21", "990,099"]


def test_the_serving_table_says_whether_the_load_generator_set_the_pace_or_the_server_did() -> None:
    def cell(name: str, bound: float, processes: int) -> object:
        metrics = {**serving_metrics(50.0, 10.0, 9.5, 900.0, 16), "client_bound": bound,
                   "client_processes": processes, "client_loop_lag_p99_ms": 1.1}
        return record(f"bench/test_serving.py::test_serving[{name}-H200:1]", [0.05] * 20, timer="llm_load:ttft",
                      metrics=metrics)

    records = [cell("vllm-16", 0.0, 1), cell("vllm-64", 0.0, 2), cell("vllm-256", 1.0, 4)]
    lines = summary_lines([CellResult(r) for r in records])
    serving = parts(lines)["serving: latencies in ms"]
    assert all(len(line) <= DEFAULT_WIDTH for line in lines), max(lines, key=len)
    start = serving[0].index("client")
    assert [row[start:start + 9].strip() for row in serving[1:4]] == [
        "ok",  # the server set the pace, one client process kept up
        "ok ×2",  # client-bound at first, sent again with 2 processes, then ok
        "BOUND ×4",  # still client-bound with 4: the figures are the client's
    ]
