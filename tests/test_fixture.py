"""The gpubench fixture: what it measures or records lands in pytest-benchmark's results, exactly."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from pytest_gpubench.hardware import LocalInventory

FAST = ("--gpubench-max-time=0.3", "--gpubench-min-time=0.05", "--gpubench-warmup=0.01")


@pytest.fixture
def host_without_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process runs see a host with no GPU, whatever machine runs these tests."""
    monkeypatch.setattr("pytest_gpubench.session.discover_local_inventory", LocalInventory)


def run_json(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict[str, Any]]:
    result = pytester.runpytest("--gpu", "cpu", "--benchmark-json=out.json", *args)
    return result, json.loads((pytester.path / "out.json").read_text())


def only_benchmark(saved: dict[str, Any]) -> dict[str, Any]:
    assert len(saved["benchmarks"]) == 1, [b["fullname"] for b in saved["benchmarks"]]
    return saved["benchmarks"][0]


def assert_error_line(result: pytest.RunResult, text: str) -> None:
    """The failure's ``E   <text>`` line is in the report, exactly."""
    assert any(re.fullmatch(r"E +" + re.escape(text), line) for line in result.stdout.lines), result.stdout.str()


def test_record_stores_exactly_the_samples(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_r="""
        def test_r(gpubench):
            gpubench.record([0.0011, 0.0012, 0.00105, 0.0013, 0.00099], metrics={"ttft_p99_ms": 12.5})
        """
    )
    result, saved = run_json(pytester)
    result.assert_outcomes(passed=1)
    bench = only_benchmark(saved)
    assert bench["fullname"] == "test_r.py::test_r[cpu]"
    stats = bench["stats"]
    assert stats["data"] == [0.0011, 0.0012, 0.00105, 0.0013, 0.00099]
    assert stats["rounds"] == 5
    assert stats["iterations"] == 1
    assert stats["median"] == 0.0011
    assert stats["min"] == 0.00099
    assert stats["max"] == 0.0013
    details = bench["extra_info"]["gpubench"]
    assert details["metrics"] == {"ttft_p99_ms": 12.5}
    assert details["target"] == "cpu"
    assert details["timer"] == "external"
    assert details["stop_reason"] == "5 samples recorded"


def test_record_with_loops_divides_each_total(pytester: pytest.Pytester) -> None:
    totals = [0.004, 0.0081, 0.0043, 0.00397]
    pytester.makepyfile(
        test_r=f"""
        def test_r(gpubench):
            gpubench.record({totals!r}, loops=4)
        """
    )
    result, saved = run_json(pytester)
    result.assert_outcomes(passed=1)
    stats = only_benchmark(saved)["stats"]
    assert stats["data"] == [t / 4 for t in totals]
    assert stats["iterations"] == 4
    assert stats["rounds"] == 4
    assert only_benchmark(saved)["extra_info"]["gpubench"]["loops"] == 4


def test_terminal_summary_lists_the_cell(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_r="""
        import pytest

        @pytest.mark.parametrize("n", [1, 2])
        def test_r(gpubench, n):
            gpubench.record([0.0011 * n, 0.0012 * n, 0.00105 * n, 0.0013 * n, 0.00099 * n], items=1000)
        """
    )
    result = pytester.runpytest("--gpu", "cpu")
    result.assert_outcomes(passed=2)
    lines = result.stdout.lines
    section = next(i for i, line in enumerate(lines) if re.fullmatch(r"-+ gpubench: 2 cells -+", line))
    # whether a blank line follows the section title depends on what was written before it
    body = [line for line in lines[section + 1 :] if line.strip()]
    title, header, first, second = body[:4]
    assert title == "kernels: median in ms"
    assert header.split() == ["cell", "median", "ms", "stdrel", "samples", "items/s"]
    # five samples 14 % apart are flagged, in the row and in a note under the table
    assert first.split() == ["!", "test_r[1-cpu]", "1.100", "14.09%", "5", "909,091"]  # 1000 items in 1.1 ms
    assert second.split()[:3] == ["!", "test_r[2-cpu]", "2.200"]
    assert "! test_r[1-cpu]: noisy: stdrel 14.09% above the 0.50% target; few samples: 5 < 10" in body


def test_no_summary_section_without_gpubench_cells(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    result = pytester.runpytest("--gpu", "cpu")
    result.assert_outcomes(passed=1)
    assert not any(re.fullmatch(r"-+ gpubench: \d+ cells -+", line) for line in result.stdout.lines)


def test_measuring_a_function_on_cpu_reports_tflops(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_f="""
        import numpy as np

        def test_f(gpubench):
            a = np.ones((64, 64), dtype=np.float32)
            gpubench(np.matmul, a, a, flops=2 * 64**3, dtype="fp32")
        """
    )
    result, saved = run_json(pytester, *FAST)
    result.assert_outcomes(passed=1)
    bench = only_benchmark(saved)
    details = bench["extra_info"]["gpubench"]
    assert details["timer"] == "cpu_perf_counter"
    assert details["cache"] == "hot"
    assert details["work"] == {"flops": 2 * 64**3, "dtype": "fp32", "gpus": 1}
    metrics = details["metrics"]
    assert metrics["tflops"] > 0
    assert "pct_peak_tflops" not in metrics  # the CPU has no datasheet peak
    # the rate is computed at the very median that pytest-benchmark stores
    assert metrics["tflops"] == pytest.approx(2 * 64**3 / bench["stats"]["median"] / 1e12, rel=1e-12)
    assert len(bench["stats"]["data"]) == bench["stats"]["rounds"] >= 10


def test_jax_function_uses_the_jax_timer(pytester: pytest.Pytester) -> None:
    pytest.importorskip("jax")  # imported here, so the inner run does not re-import it
    pytester.makepyfile(
        test_j="""
        import jax.numpy as jnp

        def test_j(gpubench):
            x = jnp.ones((32, 32), dtype=jnp.float32)
            gpubench(lambda: x @ x, flops=2 * 32**3, dtype="fp32")
        """
    )
    result, saved = run_json(pytester, *FAST)
    result.assert_outcomes(passed=1)
    details = only_benchmark(saved)["extra_info"]["gpubench"]
    assert details["timer"] == "jax_block_until_ready"
    assert details["metrics"]["tflops"] > 0


def test_gpubench_measures_once_per_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_twice="""
        def test_twice(gpubench):
            gpubench.record([0.001])
            gpubench(lambda: None)
        """
    )
    result = pytester.runpytest("--gpu", "cpu")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(failed=1)
    assert_error_line(result, "RuntimeError: gpubench measures once per test; parametrize the test to measure more")


@pytest.mark.parametrize(
    ("samples", "message"),
    [
        ("[]", "gpubench.record() needs at least one sample"),
        ("[-1.0]", "gpubench.record(): samples must be finite seconds >= 0"),
        ("[0.001, float('nan')]", "gpubench.record(): samples must be finite seconds >= 0"),
        ("[float('inf')]", "gpubench.record(): samples must be finite seconds >= 0"),
    ],
)
def test_record_rejects_bad_samples(pytester: pytest.Pytester, samples: str, message: str) -> None:
    pytester.makepyfile(
        test_bad=f"""
        def test_bad(gpubench):
            gpubench.record({samples})
        """
    )
    result = pytester.runpytest("--gpu", "cpu")
    result.assert_outcomes(failed=1)
    assert_error_line(result, f"ValueError: {message}")


def test_record_rejects_bad_loops(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_bad="""
        def test_bad(gpubench):
            gpubench.record([0.001], loops=0)
        """
    )
    result = pytester.runpytest("--gpu", "cpu")
    result.assert_outcomes(failed=1)
    assert_error_line(result, "ValueError: loops=0; use a whole number >= 1")


def test_benchmark_disable_runs_the_function_once_and_saves_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_d="""
        def test_d(gpubench):
            def fn():
                with open("calls.txt", "a") as f:
                    f.write("call\\n")
            assert gpubench.enabled is False
            assert gpubench(fn) is None
        """
    )
    result = pytester.runpytest(
        "--gpu", "cpu", "--benchmark-disable", "--benchmark-autosave", "--benchmark-json=out.json", *FAST
    )
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1)
    assert (pytester.path / "calls.txt").read_text() == "call\n"
    assert not (pytester.path / "out.json").exists()
    assert list(pytester.path.glob(".benchmarks/**/*.json")) == []
    assert not any(re.fullmatch(r"-+ gpubench: \d+ cells -+", line) for line in result.stdout.lines)


def test_benchmark_disable_gives_no_warning(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_d="def test_d(gpubench):\n    gpubench(lambda: None)\n")
    result = pytester.runpytest("--gpu", "cpu", "--benchmark-disable")
    result.assert_outcomes(passed=1, warnings=0)


def test_autosave_keeps_raw_samples_and_gpu_machine_info(pytester: pytest.Pytester, host_without_gpu: None) -> None:
    pytester.makepyfile(
        test_a="""
        def test_a(gpubench):
            gpubench.record([0.003, 0.001, 0.002])
        """
    )
    result = pytester.runpytest("--gpu", "cpu", "--benchmark-autosave")
    result.assert_outcomes(passed=1)
    files = list(pytester.path.glob(".benchmarks/*/*.json"))
    assert len(files) == 1, files
    saved = json.loads(files[0].read_text())
    bench = only_benchmark(saved)
    assert bench["fullname"] == "test_a.py::test_a[cpu]"
    assert bench["stats"]["data"] == [0.003, 0.001, 0.002]  # without --benchmark-save-data
    gpu = saved["machine_info"]["gpu"]
    assert gpu["count"] == 0
    assert gpu["name"] is None
    assert gpu["source"] == "none"


def test_busy_wait_of_one_millisecond_measures_one_millisecond(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_busy="""
        import time

        def busy():
            end = time.perf_counter() + 1e-3
            while time.perf_counter() < end:
                pass

        def test_busy(gpubench):
            gpubench(busy)
        """
    )
    result, saved = run_json(pytester, *FAST)
    result.assert_outcomes(passed=1)
    stats = only_benchmark(saved)["stats"]
    assert stats["median"] == pytest.approx(1e-3, rel=0.10)
    assert min(stats["data"]) >= 1e-3



@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("gpubench(fn, timer='gpu')", "ValueError: timer='gpu'; use one of auto, cuda, jax, jax_host, cpu"),
        ("gpubench(fn, cache='warm')", "ValueError: cache='warm'; use cold or hot"),
        ("gpubench(fn, flops=-1)", "ValueError: flops= must be >= 0, got -1"),
        ("gpubench(fn, gpus=0)", "ValueError: gpus= must be >= 1, got 0"),
    ],
)
def test_bad_measure_arguments_name_what_to_write(pytester: pytest.Pytester, call: str, message: str) -> None:
    pytester.makepyfile(
        test_bad=f"""
        def fn():
            pass

        def test_bad(gpubench):
            {call}
        """
    )
    result = pytester.runpytest("--gpu", "cpu", *FAST)
    result.assert_outcomes(failed=1)
    assert_error_line(result, message)


def test_cell_with_few_samples_saves_strict_json(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_one="def test_one(gpubench):\n    gpubench.record([0.001, 0.002])\n")
    result = pytester.runpytest("--gpu", "cpu", "--benchmark-json=out.json")
    result.assert_outcomes(passed=1)
    text = (pytester.path / "out.json").read_text()
    # RFC 8259 JSON has no Infinity or NaN: jq, JavaScript and most tools reject a file that holds them
    json.loads(text, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name} in the saved run"))


def test_benchmark_only_runs_gpubench_cells(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_o="def test_o(gpubench):\n    gpubench.record([0.001])\n\ndef test_plain():\n    pass\n")
    result = pytester.runpytest("--gpu", "cpu", "--benchmark-only")
    result.assert_outcomes(passed=1, skipped=1)


def test_benchmark_skip_skips_gpubench_cells(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_o="def test_o(gpubench):\n    gpubench.record([0.001])\n\ndef test_plain():\n    pass\n")
    result = pytester.runpytest("--gpu", "cpu", "--benchmark-skip", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    # skipped at collection, as pytest-benchmark skips its own benchmarks: gpubench cells are benchmarks to it
    result.stdout.fnmatch_lines(["SKIPPED [[]1[]] test_o.py*Skipping benchmark (--benchmark-skip active)."])
