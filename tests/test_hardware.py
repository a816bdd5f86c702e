"""The GPU catalog, nvidia-smi parsing, the local inventory, and throughput against datasheet peaks."""

from __future__ import annotations

from collections.abc import Callable

import json

import pytest

from pytest_gpubench.hardware import (
    CPU_TARGET,
    Catalog,
    LocalGpu,
    LocalInventory,
    Target,
    classify_gpu_name,
    parse_nvidia_smi_csv,
    unmet_reason,
)
from pytest_gpubench.measure.throughput import Work, throughput_metrics

SMI_CSV = (
    "0, NVIDIA H200, 143771, GPU-aaaa, 580.159.04, 1980, 3201\n"
    "1, NVIDIA H200, 143771, GPU-bbbb, 580.159.04, 1980, 3201\n"
)


# --- nvidia-smi output ---------------------------------------------------------------------------


def test_parse_nvidia_smi_csv() -> None:
    gpus, driver = parse_nvidia_smi_csv(SMI_CSV)
    assert driver == "580.159.04"
    assert gpus == [
        LocalGpu(0, "NVIDIA H200", 143771, "GPU-aaaa", 1980, 3201),
        LocalGpu(1, "NVIDIA H200", 143771, "GPU-bbbb", 1980, 3201),
    ]


def test_parse_nvidia_smi_csv_skips_noise_and_unknown_clocks() -> None:
    text = "No devices were found\n\n0, Tesla T4, 15360, GPU-cccc, 535.104.05, [N/A], [N/A]\n"
    gpus, driver = parse_nvidia_smi_csv(text)
    assert gpus == [LocalGpu(0, "Tesla T4", 15360, "GPU-cccc", None, None)]
    assert driver == "535.104.05"


def test_parse_nvidia_smi_csv_of_nothing() -> None:
    assert parse_nvidia_smi_csv("") == ([], None)


@pytest.mark.parametrize(
    ("device_name", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
        ("NVIDIA A100-SXM4-40GB", "A100-40GB"),
        ("NVIDIA A100 80GB PCIe", "A100-80GB"),
        ("NVIDIA A10G", "A10G"),
        ("NVIDIA A10", "A10"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA L40S", "L40S"),
        ("Tesla T4", "T4"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA B200", "B200"),
        ("NVIDIA L40", None),
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_classify_gpu_name(device_name: str, expected: str | None) -> None:
    assert classify_gpu_name(device_name, Catalog()) == expected


def test_unmet_reason_names_what_is_needed_and_what_the_host_has() -> None:
    catalog = Catalog()
    host = LocalInventory(tuple(LocalGpu(i, "NVIDIA H200", 143771) for i in range(2)))
    h200 = catalog.lookup("H200")
    assert unmet_reason(Target(h200, 2), host, catalog) is None
    assert unmet_reason(Target(h200, 4), host, catalog) == "needs 4× H200; this host has 2× NVIDIA H200"
    h100 = catalog.lookup("H100")
    assert unmet_reason(Target(h100, 1), host, catalog) == "needs 1× H100; this host has 2× NVIDIA H200"
    assert unmet_reason(CPU_TARGET, LocalInventory(), catalog) is None
    assert unmet_reason(Target(h200, 1), LocalInventory(), catalog) == "needs 1× H200; this host has no GPU"


# --- throughput ----------------------------------------------------------------------------------


def test_percent_of_peak_uses_the_datasheet_figure_for_the_dtype() -> None:
    h100 = Target(Catalog().lookup("H100"), 1)
    metrics = throughput_metrics(Work(flops=2e12, dtype="bf16"), 2.5e-3, h100)
    assert metrics["tflops"] == pytest.approx(800.0)
    assert metrics["pct_peak_tflops"] == pytest.approx(100 * metrics["tflops"] / 989.4)
    # framework spellings of the dtype name the same peak
    assert throughput_metrics(Work(flops=2e12, dtype="torch.bfloat16"), 2.5e-3, h100) == metrics
    # fp32 has its own, lower peak
    fp32 = throughput_metrics(Work(flops=2e12, dtype="fp32"), 2.5e-3, h100)
    assert fp32["pct_peak_tflops"] == pytest.approx(100 * 800.0 / 67.0)


def test_percent_of_peak_counts_every_gpu_sharing_the_work() -> None:
    h100x8 = Target(Catalog().lookup("H100"), 8)
    metrics = throughput_metrics(Work(flops=8e12, bytes=1e9, dtype="bf16", gpus=8), 1e-2, h100x8)
    assert metrics["tflops"] == pytest.approx(800.0)
    assert metrics["pct_peak_tflops"] == pytest.approx(100 * 800.0 / (8 * 989.4))
    assert metrics["gbps"] == pytest.approx(100.0)
    assert metrics["pct_peak_gbps"] == pytest.approx(100 * 100.0 / (8 * 3350))


def test_no_percent_of_peak_without_a_known_peak() -> None:
    # the CPU, a dtype without a datasheet figure, and a GPU whose peaks are not published
    catalog = Catalog()
    assert throughput_metrics(Work(flops=1e9, dtype="fp32"), 1e-3, CPU_TARGET) == {"tflops": pytest.approx(1.0)}
    h100, a10g = Target(catalog.lookup("H100"), 1), Target(catalog.lookup("A10G"), 1)
    assert "pct_peak_tflops" not in throughput_metrics(Work(flops=1e9, dtype="int8"), 1e-3, h100)
    assert "pct_peak_tflops" not in throughput_metrics(Work(flops=1e9), 1e-3, h100)
    assert "pct_peak_tflops" not in throughput_metrics(Work(flops=1e9, dtype="bf16"), 1e-3, a10g)


def test_items_and_tokens_per_second() -> None:
    metrics = throughput_metrics(Work(items=32, tokens=4096), 0.5, CPU_TARGET)
    assert metrics == {"items_per_s": 64.0, "tokens_per_s": 8192.0}


# --- a host with GPUs, as nvidia-smi reports it ----------------------------------------------------

def test_targets_on_a_host_with_two_h200(pytester: pytest.Pytester, host_with_two_h200: None) -> None:
    pytester.makepyfile(
        test_h="""
        def test_h(gpubench, request):
            # the cell is on a GPU target, but records samples: nothing here needs a real GPU
            assert gpubench.device == "cuda"
            assert request.node.name == f"test_h[{gpubench.target.id}]"
            gpubench.record([0.001])
        """
    )
    result = pytester.runpytest_subprocess(
        "--gpu", "local", "--gpu", "H200:1,H100:1", "-v", "-rs", "--benchmark-json=out.json", "-p", "no:cacheprovider"
    )
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=2, skipped=1)
    lines = result.stdout.lines
    assert "gpubench: targets H200:2, H200:1, H100:1; host has 2× NVIDIA H200" in lines
    assert "gpubench: driver 580.159.04, CUDA 13.0 (via nvidia-smi)" in lines
    out = result.stdout.str()
    assert "test_h.py::test_h[H200:2] PASSED" in out
    assert "test_h.py::test_h[H200:1] PASSED" in out
    assert "test_h.py::test_h[H100:1] SKIPPED" in out
    assert "SKIPPED [1] test_h.py: needs 1× H100; this host has 2× NVIDIA H200" in lines

    saved = json.loads((pytester.path / "out.json").read_text())
    assert saved["machine_info"]["gpu"] == {
        "name": "NVIDIA H200",
        "count": 2,
        "memory_mib": 143771,
        "driver": "580.159.04",
        "cuda": "13.0",
        "max_sm_clock_mhz": 1980,
        "max_memory_clock_mhz": 3201,
        "source": "nvidia-smi",
    }
    usd = {b["fullname"]: b["extra_info"]["gpubench"]["usd_per_hour"] for b in saved["benchmarks"]}
    assert usd == {
        "test_h.py::test_h[H200:2]": pytest.approx(2 * 4.54),
        "test_h.py::test_h[H200:1]": pytest.approx(4.54),
    }


@pytest.mark.parametrize(
    ("visible", "expected_id"),
    [("1", "H200:1"), ("GPU-bbbb", "H200:1"), ("0,1", "H200:2"), ("", "cpu")],
)
def test_cuda_visible_devices_limits_local(
    pytester: pytest.Pytester, host_with_two_h200: None, monkeypatch: pytest.MonkeyPatch, visible: str, expected_id: str
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    pytester.makepyfile(test_h="def test_h(gpubench):\n    pass\n")
    result = pytester.runpytest_subprocess("--gpu", "local", "--collect-only", "-q", "-p", "no:cacheprovider")
    assert [line for line in result.stdout.lines if "::" in line] == [f"test_h.py::test_h[{expected_id}]"]


def test_configured_prices_reach_the_saved_run(pytester: pytest.Pytester, host_with_two_h200: None) -> None:
    pytester.makepyprojecttoml("[tool.gpubench]\nprices = {H200 = 5.0}\n")
    pytester.makepyfile(test_h="def test_h(gpubench):\n    gpubench.record([0.001])\n")
    result = pytester.runpytest_subprocess("--gpu", "local", "--benchmark-json=out.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    (bench,) = json.loads((pytester.path / "out.json").read_text())["benchmarks"]
    assert bench["fullname"] == "test_h.py::test_h[H200:2]"
    assert bench["extra_info"]["gpubench"]["usd_per_hour"] == 10.0


def test_local_gpu_the_catalog_lacks_still_runs(pytester: pytest.Pytester, fake_nvidia_smi: Callable[[str], None]) -> None:
    fake_nvidia_smi("0, NVIDIA GeForce RTX 4090, 24564, GPU-dddd, 580.159.04, 3105, 10501\n")
    pytester.makepyfile(test_h="def test_h(gpubench):\n    gpubench.record([0.001])\n")
    result = pytester.runpytest_subprocess("--gpu", "local", "-v", "-p", "no:cacheprovider")
    assert "test_h.py::test_h[NVIDIA-GeForce-RTX-4090:1] PASSED" in result.stdout.str()
    result.assert_outcomes(passed=1)
