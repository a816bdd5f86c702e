"""GPU behaviour, run on a GPU host (the device machine); every test here skips cleanly without CUDA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

FAST = ["--gpubench-max-time=1", "--gpubench-min-time=0.2", "--gpubench-warmup=0.1", "-p", "no:cacheprovider"]


def test_local_gpu_cell_uses_cuda_events_and_records_the_gpu(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import torch

        def test_add(gpubench):
            x = torch.rand(1 << 24, device=gpubench.device)
            gpubench(torch.add, x, x, bytes=3 * x.numel() * 4)
        """
    )
    result = pytester.runpytest_subprocess(*FAST, "--benchmark-json=out.json")
    result.assert_outcomes(passed=1)
    document = json.loads((pytester.path / "out.json").read_text())
    (bench,) = document["benchmarks"]
    name = torch.cuda.get_device_name()
    assert bench["fullname"].endswith(f"test_add[{bench['extra_info']['gpubench']['target']}]")
    assert bench["extra_info"]["gpubench"]["timer"] == "cuda_event"
    assert bench["extra_info"]["gpubench"]["cache"] == "cold"
    assert document["machine_info"]["gpu"]["name"] == name
    assert document["machine_info"]["gpu"]["count"] == torch.cuda.device_count()
    assert bench["extra_info"]["gpubench"]["metrics"]["gbps"] > 100
    # the GPU CUDA ran the cell on is the one the cell held
    held = bench["extra_info"]["gpubench"]["gpu_uuids"][0]
    assert held.endswith(bench["extra_info"]["gpubench"]["torch_device_uuid"])
    assert held.endswith(str(torch.cuda.get_device_properties(0).uuid))


def test_spin_kernel_of_known_length_is_timed_to_within_one_percent(pytester: pytest.Pytester) -> None:
    """torch.cuda._sleep spins a fixed number of clock cycles: its length, calibrated with independent
    events around 50 back-to-back spins, is what the fixture must report for one spin, cold and hot."""
    pytester.makepyfile(
        """
        import json
        import pytest
        import torch

        CYCLES = 2_000_000

        @pytest.fixture(scope="module")
        def truth():
            torch.cuda._sleep(CYCLES)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(50):
                torch.cuda._sleep(CYCLES)
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 50 * 1e-3

        @pytest.mark.parametrize("cache", ["cold", "hot"])
        def test_spin(gpubench, truth, cache):
            result = gpubench(torch.cuda._sleep, CYCLES, cache=cache)
            assert abs(result.summary.median / truth - 1) < 0.01, (result.summary.median, truth)
        """
    )
    result = pytester.runpytest_subprocess(*FAST)
    result.assert_outcomes(passed=2)


def test_jax_on_gpu_is_timed_on_the_device_clock(pytester: pytest.Pytester) -> None:
    pytest.importorskip("jax")
    pytester.makepyfile(
        """
        import jax
        import jax.numpy as jnp

        def test_jax(gpubench):
            assert jax.default_backend() == "gpu"
            x = jnp.ones((4096, 4096), dtype=jnp.bfloat16)
            f = jax.jit(lambda a: a @ a)
            result = gpubench(f, x, flops=2 * 4096**3, dtype="bf16")
            assert result.timer == "jax_profiler_device"
            assert result.metrics["tflops"] > 10
        """
    )
    result = pytester.runpytest_subprocess(*FAST)
    result.assert_outcomes(passed=1)


def test_target_bigger_than_the_host_is_skipped_with_what_it_has(pytester: pytest.Pytester) -> None:
    if torch.cuda.device_count() >= 8:
        pytest.skip("this host has 8 GPUs: an 8-GPU target is satisfied here")
    pytester.makepyfile("def test_x(gpubench):\n    gpubench.record([0.001])\n")
    result = pytester.runpytest_subprocess(*FAST, "--gpu=H200:8", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*needs 8× H200; this host has*"])


def test_collectives_over_two_or_more_gpus_report_bus_bandwidth(pytester: pytest.Pytester) -> None:
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 or more CUDA GPUs")
    suite = Path(__file__).resolve().parent.parent / "bench_suites" / "test_collectives.py"
    count = torch.cuda.device_count()
    name = torch.cuda.get_device_name().removeprefix("NVIDIA ").split()[0]
    result = pytester.runpytest_subprocess(str(suite), f"--gpu={name}:{count}", "-p", "no:cacheprovider",
                                           "--benchmark-json=out.json")
    result.assert_outcomes(passed=18)  # all-reduce, all-gather, reduce-scatter, 1 MiB to 1 GiB
    factors = {"all_reduce": 2 * (count - 1) / count, "all_gather": (count - 1) / count,
               "reduce_scatter": (count - 1) / count}
    for bench in json.loads((pytester.path / "out.json").read_text())["benchmarks"]:
        gpubench = bench["extra_info"]["gpubench"]
        metrics = gpubench["metrics"]
        assert metrics["ranks"] == count
        assert metrics["busbw_gbps"] == pytest.approx(metrics["algbw_gbps"] * factors[gpubench["op"]])
        if metrics["size_bytes"] >= 64 * 2**20:
            assert metrics["busbw_gbps"] > 10  # NVLink or PCIe: well above 10 GB/s for 64 MiB and up
        if "link_peak_gbps" in metrics:  # NVLink parts; NVLS (which can pass the link) is off under NCCL_NVLS_ENABLE=0
            assert metrics["pct_peak_link"] == pytest.approx(100 * metrics["busbw_gbps"] / metrics["link_peak_gbps"])
