"""What a cell cost: GPU-seconds from the best evidence its record has, times its price; $ per 1k tokens for
cells that produce tokens; the run's total."""

from __future__ import annotations

import pytest
from report_support import record

from pytest_gpubench.report.cost import add_costs_to_saved_json, cell_cost, gpu_count, run_cost


def test_gpus_of_a_target() -> None:
    assert [gpu_count(t) for t in ("H200:4", "A100-80GB", "cpu", "H100:1")] == [4, 1, 0, 1]


def test_a_local_cell_pays_for_setup_call_and_teardown_on_every_gpu() -> None:
    cost = cell_cost(record("t.py::test_a[H200:2]", [0.001] * 5, target="H200:2", usd_per_hour=9.08,
                            phases_s={"setup_s": 2.0, "call_s": 5.0, "teardown_s": 1.0, "env_s": 60.0}))
    assert cost.gpu_seconds == 16.0  # 8 s held x 2 GPUs; building an environment holds no GPU
    assert cost.usd == pytest.approx(8.0 * 9.08 / 3600)
    assert cost.basis == "setup + call + teardown"


def test_a_modal_cell_pays_what_its_container_cost() -> None:
    cost = cell_cost(record("t.py::test_a[H100:1]", [0.001] * 5, target="H100:1", usd_per_hour=3.95,
                            modal={"gpu": "H100", "gpu_seconds": 42.0, "cost_usd": 0.046}))
    assert (cost.gpu_seconds, cost.usd, cost.basis) == (42.0, 0.046, "Modal container")


def test_an_older_saved_run_falls_back_to_the_gpu_lock() -> None:
    cost = cell_cost(record("t.py::test_a[H200:1]", [0.001] * 5, phases_s={}, gpus_held_from=100.0,
                            gpus_held_until_at_least=103.5))
    assert cost.gpu_seconds == 3.5 and cost.basis == "GPU lock held (no teardown)"


def test_cpu_cells_have_no_price_and_tokens_have_a_price_per_1k() -> None:
    assert cell_cost(record("t.py::test_a[cpu]", [0.001] * 5, target="cpu", usd_per_hour=None)).usd is None
    serving = cell_cost(record("t.py::test_s[H200:1]", [0.05] * 5, metrics={"output_token_throughput": 2000.0}))
    assert serving.usd_per_1k_tokens == pytest.approx(4.54 / 3600 / 2000 * 1000)
    generation = cell_cost(record("t.py::test_g[H200:1]", [0.05] * 5, metrics={"tokens_per_s": 500.0}))
    assert generation.usd_per_1k_tokens == pytest.approx(4.54 / 3600 / 500 * 1000)


def test_the_run_total_and_the_saved_json() -> None:
    records = [record("t.py::test_a[H200:1]", [0.001] * 5), record("t.py::test_b[cpu]", [0.001] * 5, target="cpu",
                                                                    usd_per_hour=None)]
    total = run_cost(cell_cost(r) for r in records)
    assert total.usd == pytest.approx(10 * 4.54 / 3600) and total.cells_priced == 1
    saved = {"benchmarks": [{"fullname": r.nodeid, "extra_info": {"gpubench": {}}} for r in records]}
    add_costs_to_saved_json(records, saved)
    assert saved["gpubench"]["cost"]["total_usd"] == pytest.approx(total.usd)
    assert saved["benchmarks"][0]["extra_info"]["gpubench"]["cost"]["gpu_seconds"] == 10.0
    assert saved["benchmarks"][1]["extra_info"]["gpubench"]["cost"]["usd"] is None
