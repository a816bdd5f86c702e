"""Reports from saved runs: ``python -m pytest_gpubench.report RUN.json ... --out DIR``, on the H200 runs in
docs/results; the example committed under docs/example-report is what it makes from them."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from report_support import REPO

RESULTS = REPO / "docs" / "results"
EXAMPLE = REPO / "docs" / "example-report"
RUNS = ["suites_h200_serving.json", "suites_h200x4_gpu_H200-4.json", "variant_envs_h200_interleaved.json"]
BASELINE = "suites_h200x4_gpu_H200-1_n0.json"


def report(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest_gpubench.report", *args], capture_output=True, text=True,
                          timeout=300, cwd=REPO)


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("example")
    done = report(*(str(RESULTS / run) for run in RUNS), "--baseline", str(RESULTS / BASELINE), "--out", str(out))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "kernels: median in ms" and "variants: median in us, speed-up = baseline time / variant time" in lines
    assert lines[-1].startswith(f"gpubench: report in {out / 'index.html'} (report.md, results.csv")
    return out


def test_a_report_from_saved_runs(example: Path) -> None:
    with (example / "results.csv").open(newline="") as handle:
        rows = {row["cell"]: row for row in csv.DictReader(handle)}
    saved = {}
    for run in RUNS:
        for bench in json.loads((RESULTS / run).read_text())["benchmarks"]:
            saved[bench["fullname"]] = bench
    assert set(rows) == set(saved)
    for nodeid, row in rows.items():
        assert float(row["median_s [s]"]) == pytest.approx(saved[nodeid]["stats"]["median"])
        assert float(row["usd_per_hour [USD/h]"]) == saved[nodeid]["extra_info"]["gpubench"]["usd_per_hour"]
        assert float(row["cost_usd [USD]"]) > 0
    busbw = rows["bench_suites/test_collectives.py::test_nccl_all_reduce[1GiB-H200:4]"]
    assert busbw["group"] == "collectives" and float(busbw["busbw_gbps [GB/s]"]) > 300
    text = (example / "report.md").read_text()
    # the speed-up the saved run recorded, recomputed the same from its rounds
    speedups = json.loads((RESULTS / "variant_envs_h200_interleaved.json").read_text())["gpubench"]["speedups"]
    recorded = speedups["comparisons"][0]["variants"][0]
    assert f"| {recorded['speedup']:.3f}x | [{recorded['low']:.3f}, {recorded['high']:.3f}] | improved |" in text
    serving = rows["bench_suites/test_serving.py::test_serving[transformers-4-H200:1]"]
    assert serving["group"] == "serving" and serving["max_concurrency"] == "4"
    tokens_per_s = float(serving["output_token_throughput [tok/s]"])
    assert float(serving["usd_per_1k_tokens [USD/1k tok]"]) == pytest.approx(4.54 / 3600 / tokens_per_s * 1000)
    assert {p.name for p in (example / "plots").glob("*.png")} == {
        "latency_cdf.png", "serving_vs_concurrency.png", "speedups.png", "peak_share.png", "cost.png",
        "run_vs_baseline.png"}


def test_the_committed_example_is_what_the_saved_runs_make(example: Path) -> None:
    for name in ("results.csv", "report.md", "index.html"):
        assert (EXAMPLE / name).read_text() == (example / name).read_text(), (
            f"docs/example-report/{name} is stale: run bash scripts/example_report.sh")
    assert (EXAMPLE / "screenshot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "docs/example-report/screenshot.png" in (REPO / "README.md").read_text()


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes.json").write_text("not json")
    done = report(str(tmp_path / "notes.json"), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: {tmp_path / 'notes.json'}: not JSON "
                                                 "(Expecting value: line 1 column 1 (char 0))"]
    (tmp_path / "other.json").write_text('{"runs": []}')
    done = report(str(tmp_path / "other.json"))
    assert done.returncode == 2
    assert "not a pytest-benchmark run (no 'benchmarks' list)" in done.stderr
