"""The report folder a run leaves: results.csv and report.md read back with the right columns, units and
figures (the same as the saved JSON's), the cost in the table, the JSON and the report; where the folder goes,
how to switch it off, and the one line a missing plotting extra costs."""

from __future__ import annotations

import csv
import html
import json
import re
import sys
from pathlib import Path

import pytest
from report_support import require_module, run_priced_suite

from pytest_gpubench.metrics import REGISTRY
from pytest_gpubench.report.csv import ID_COLUMNS

PRICE = 4.54  # Modal's H200 list price per GPU-hour, the catalog's default


def read_csv(path: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = {row["cell"]: row for row in reader}
        return list(reader.fieldnames or []), rows


def md_table(text: str, heading: str) -> list[dict[str, str]]:
    """The rows of the markdown table under the line ``heading`` ('### kernels: ...', '## Metrics'), by column."""
    lines = text.split(f"\n{heading}\n", 1)[1].strip().splitlines()
    table = [line for line in lines[: next((i for i, l in enumerate(lines) if not l.startswith("|")), len(lines))]]
    split = [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in table]
    header, rows = split[0], split[2:]
    return [dict(zip(header, row)) for row in rows]


def test_results_csv_report_md_and_json_agree(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                              host_with_two_h200: None) -> None:
    result = run_priced_suite(pytester, monkeypatch)
    folder = pytester.path / "gpubench-report"
    document = json.loads((pytester.path / "out.json").read_text())
    saved = {b["fullname"]: b for b in document["benchmarks"]}

    columns, rows = read_csv(folder / "results.csv")
    assert columns[: len(ID_COLUMNS)] == list(ID_COLUMNS)
    for column in columns[len(ID_COLUMNS):]:
        key, _, unit = column.partition(" [")
        assert key in REGISTRY, column  # this run records only registered figures
        assert unit.rstrip("]") == REGISTRY[key].unit, column
    for needed in ("median_s [s]", "p99_s [s]", "stdrel_pct [%]", "samples", "tflops [TFLOP/s]", "gbps [GB/s]",
                   "ttft_p50_ms [ms]", "ttft_p99_ms [ms]", "tpot_p99_ms [ms]", "itl_p99_ms [ms]",
                   "output_token_throughput [tok/s]", "max_concurrency", "gpu_seconds [GPU-s]",
                   "usd_per_hour [USD/h]", "cost_usd [USD]", "usd_per_1k_tokens [USD/1k tok]"):
        assert needed in columns, needed
    assert set(rows) == set(saved)
    for nodeid, row in rows.items():
        details = saved[nodeid]["extra_info"]["gpubench"]
        assert float(row["median_s [s]"]) == pytest.approx(saved[nodeid]["stats"]["median"])
        for key, value in details["metrics"].items():
            if value is not None and key in REGISTRY:
                assert float(row[f"{key} [{REGISTRY[key].unit}]" if REGISTRY[key].unit else key]) == pytest.approx(value)
        cost = details["cost"]  # the JSON's, per cell
        assert cost["usd_per_hour"] == PRICE and float(row["usd_per_hour [USD/h]"]) == PRICE
        assert float(row["gpu_seconds [GPU-s]"]) == pytest.approx(cost["gpu_seconds"])
        phases = details["phases_s"]
        assert cost["gpu_seconds"] == pytest.approx(phases["setup_s"] + phases["call_s"] + phases["teardown_s"])
        assert float(row["cost_usd [USD]"]) == pytest.approx(cost["gpu_seconds"] * PRICE / 3600)
        assert row["target"] == "H200:1"

    serving = rows["test_suite.py::test_serving[2-H200:1]"]
    assert serving["group"] == "serving" and serving["max_concurrency"] == "2"
    tokens_per_s = float(serving["output_token_throughput [tok/s]"])
    assert float(serving["usd_per_1k_tokens [USD/1k tok]"]) == pytest.approx(PRICE / 3600 / tokens_per_s * 1000)
    assert rows["test_suite.py::test_kernel[fast-H200:1]"]["variant"] == "fast"
    assert rows["test_suite.py::test_kernel[fast-H200:1]"]["group"] == "variants"
    assert rows["test_suite.py::test_matmul[H200:1]"]["usd_per_1k_tokens [USD/1k tok]"] == ""

    total = document["gpubench"]["cost"]
    assert total["total_usd"] == pytest.approx(sum(b["extra_info"]["gpubench"]["cost"]["usd"] for b in saved.values()))
    assert total["cells_priced"] == 5
    assert f"cost: ${total['total_usd']:.2f} for " in result.stdout.str()

    report = (folder / "report.md").read_text()
    headings = re.findall(r"^#+ .*$", report, flags=re.M)
    assert headings[:5] == ["# gpubench report", "## Results", "### kernels: median in ms",
                            "### serving: latencies in ms",
                            "### variants: median in ms, speed-up = baseline time / variant time"]
    assert {"## Rankings", "### ranked by cost per 1k tokens", "### ranked by out tok/s", "## Plots",
            "## Metrics"} <= set(headings)
    (matmul,) = md_table(report, "### kernels: median in ms")
    assert matmul["cell"] == "test_matmul[H200:1]" and matmul["median ms"] == "1.616"
    assert matmul["TFLOP/s"] == f"{1.1e12 / 0.001616 / 1e12:.1f}"
    assert matmul["$"].startswith("$")
    serving_rows = {row["cell"].removeprefix("! "): row for row in md_table(report, "### serving: latencies in ms")}
    assert set(serving_rows) == {"test_serving[1-H200:1]", "test_serving[2-H200:1]"}
    assert float(serving_rows["test_serving[2-H200:1]"]["TTFT p99"]) == pytest.approx(
        float(serving["ttft_p99_ms [ms]"]), rel=1e-3)
    fast = next(row for row in md_table(report, "### variants: median in ms, speed-up = baseline time / variant time")
                if row["variant"] == "fast")
    assert fast["speed-up"] == "2.000x" and fast["verdict"] == "improved"
    ranked = md_table(report, "### ranked by cost per 1k tokens")
    assert [row["rank"] for row in ranked] == ["1", "2"]
    costs = [float(row["$/1k tok"].lstrip("$")) for row in ranked]
    assert costs == sorted(costs)
    metrics = {row["key"]: row for row in md_table(report, "## Metrics")}
    assert metrics["ttft_p99_ms"]["unit"] == "ms" and metrics["ttft_p99_ms"]["title"] == "TTFT p99"
    assert metrics["usd_per_1k_tokens"]["unit"] == "USD/1k tok"
    for image in re.findall(r"!\[[^]]*\]\(([^)]+)\)", report):
        assert (folder / image).is_file(), image


def test_where_the_folder_goes_and_how_to_switch_it_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_one="def test_one(gpubench):\n    gpubench.record([0.001] * 5)\n")
    common = ("--gpu=cpu", "-p", "no:cacheprovider")
    off = pytester.runpytest(*common, "--gpubench-report=no")
    off.assert_outcomes(passed=1)
    assert not (pytester.path / "gpubench-report").exists()
    assert not any(line.startswith("gpubench: report in") for line in off.stdout.lines)

    chosen = pytester.runpytest(*common, "--gpubench-report=out/run1")
    chosen.assert_outcomes(passed=1)
    assert (pytester.path / "out" / "run1" / "index.html").is_file()
    assert f"gpubench: report in {pytester.path / 'out' / 'run1' / 'index.html'} (report.md, results.csv)" in \
        chosen.stdout.lines

    pytester.makepyprojecttoml('[tool.gpubench]\nreport = "reports/latest"\n')
    configured = pytester.runpytest(*common)
    configured.assert_outcomes(passed=1)
    assert (pytester.path / "reports" / "latest" / "results.csv").is_file()

    pytester.makepyprojecttoml("[tool.gpubench]\nreport = false\n")
    pytester.runpytest(*common).assert_outcomes(passed=1)
    assert not (pytester.path / "gpubench-report").exists()

    pytester.makepyprojecttoml("[tool.gpubench]\nreport = 3\n")
    bad = pytester.runpytest(*common)
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    (line,) = [line for line in bad.stderr.lines if line.strip()]
    assert line.endswith("[tool.gpubench] report: 3 is not a folder; write a path such as gpubench-report, or no")


def test_a_folder_that_cannot_be_written_costs_one_warning(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_one="def test_one(gpubench):\n    gpubench.record([0.001] * 5)\n")
    (pytester.path / "blocker").write_text("a file where the folder should be")
    result = pytester.runpytest("--gpu=cpu", "-p", "no:cacheprovider", "--gpubench-report=blocker/report",
                                "--benchmark-json=out.json")
    result.assert_outcomes(passed=1)
    assert result.ret == 0
    (warning,) = [line for line in result.stdout.lines if "WARNING" in line]
    assert warning.startswith(f"gpubench: WARNING: the report folder was not written to {pytester.path}/blocker/report:")
    assert (pytester.path / "out.json").is_file()  # pytest-benchmark still saved the run


def test_without_matplotlib_the_report_says_what_to_install(pytester: pytest.Pytester,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed: import fails
    pytester.makepyfile(test_one="""
        def test_one(gpubench, gpubench_variant):
            gpubench.record([0.001 if gpubench_variant == "a" else 0.002] * 5)
    """)
    pytester.makepyprojecttoml("[tool.gpubench.variants.a]\n[tool.gpubench.variants.b]\n")
    result = pytester.runpytest("--gpu=cpu", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    line = "plots need matplotlib: pip install 'pytest-gpubench[report]'"
    assert result.stdout.lines[-2].endswith(f"(report.md, results.csv); {line}")
    folder = pytester.path / "gpubench-report"
    assert line in (folder / "report.md").read_text() and line in html.unescape((folder / "index.html").read_text())
    assert not (folder / "plots").exists()


def test_a_rerun_leaves_no_plot_of_an_earlier_run(pytester: pytest.Pytester) -> None:
    require_module("matplotlib", "report")
    pytester.makepyfile(test_one="""
        def test_one(gpubench, gpubench_variant):
            gpubench.record([0.001 if gpubench_variant == "a" else 0.002] * 5)
    """)
    pytester.makepyprojecttoml("[tool.gpubench.variants.a]\n[tool.gpubench.variants.b]\n")
    pytester.runpytest("--gpu=cpu", "-p", "no:cacheprovider").assert_outcomes(passed=2)
    plots = pytester.path / "gpubench-report" / "plots"
    assert (plots / "speedups.png").is_file()
    pytester.runpytest("--gpu=cpu", "-p", "no:cacheprovider", "--gpubench-variant=a").assert_outcomes(passed=1)
    assert not (plots / "speedups.png").exists()
