"""What the report tests share: tools that must be there in CI (a test that needs one skips elsewhere, and fails
in CI rather than skip), and cell records made as the producers make them."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_gpubench.metrics import DISTRIBUTION_STATS, distribution_key
from pytest_gpubench.record import GPUBENCH_KEY, CellRecord

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_module(name: str, extra: str) -> None:
    """Skip (fail in CI) unless ``name`` is installed. Found, not imported: pygal imports the importlib_metadata
    backport, which disables the standard library's distribution finder for good, and once pytester has put
    sys.meta_path back, no later in-process pytest run would find a plugin."""
    if importlib.util.find_spec(name) is None:
        message = f"{name} is not installed: pip install 'pytest-gpubench[{extra}]'"
        if IN_CI:
            pytest.fail(f"CI must run this test: {message}")
        pytest.skip(message)


def require_chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if IN_CI:
            pytest.fail("CI must run this test: no chromium on PATH (.ci/run installs Debian's package)")
        pytest.skip("no chromium on PATH: apt-get install chromium")
    return found


def record(nodeid: str, samples_s: list[float], *, target: str = "H200:1", usd_per_hour: float | None = 4.54,
           metrics: dict[str, float] | None = None, params: dict[str, Any] | None = None, timer: str = "cuda_event",
           phases_s: dict[str, float] | None = None, **details: Any) -> CellRecord:
    name = nodeid.split("::")[-1]
    info: dict[str, Any] = {"target": target, "timer": timer, "cache": "cold", "stop_reason": "test",
                            "metrics": dict(metrics or {}), **details}
    if usd_per_hour is not None:
        info["usd_per_hour"] = usd_per_hour
    return CellRecord(nodeid=nodeid, name=name, group=None, param=name.partition("[")[2].rstrip("]"),
                      params=dict(params or {}), totals_s=tuple(samples_s), loops=1, timer=timer,
                      extra_info={GPUBENCH_KEY: info},
                      phases_s=dict(phases_s if phases_s is not None else {"setup_s": 1.0, "call_s": 8.0,
                                                                            "teardown_s": 1.0}))


def serving_metrics(ttft_ms: float, tpot_ms: float, itl_ms: float, out_tok_s: float, concurrency: int
                    ) -> dict[str, float]:
    """llm_load's metrics for a load whose latencies are near the given medians (p99 a third above)."""
    metrics: dict[str, float] = {"completed": 64.0, "failed": 0.0, "request_throughput": out_tok_s / 128,
                                 "output_token_throughput": out_tok_s, "total_token_throughput": out_tok_s * 1.5,
                                 "max_concurrency": float(concurrency)}
    for name, median in (("ttft", ttft_ms), ("tpot", tpot_ms), ("itl", itl_ms), ("e2el", ttft_ms + 127 * tpot_ms)):
        for stat in DISTRIBUTION_STATS:
            scale = {"p99": 1.33, "p95": 1.2, "p90": 1.1, "std": 0.1}.get(stat, 1.0)
            metrics[distribution_key(name, stat)] = median * scale
    return metrics


def a_run() -> list[CellRecord]:
    """Kernels, a collective, serving cells at two concurrencies, and a commit's three variants."""
    rng = np.random.default_rng(7)

    def around(median_s: float, n: int = 40, spread: float = 0.01) -> list[float]:
        return list(median_s * (1 + spread * rng.standard_normal(n)))

    records = [
        record("bench/test_matmul.py::test_matmul[bf16-H200:1]", around(1.6e-3),
               metrics={"tflops": 687.0, "pct_peak_tflops": 69.5}),
        record("bench/test_bandwidth.py::test_add[H200:1]", around(7.4e-4),
               metrics={"gbps": 4344.0, "pct_peak_gbps": 90.5}),
        record("bench/test_matmul.py::test_matmul[fp32-cpu]", around(0.21), target="cpu", usd_per_hour=None,
               metrics={"tflops": 0.01}),
        record("bench/test_collectives.py::test_all_reduce[1GiB-H200:2]", around(4.5e-3, 20), target="H200:2",
               usd_per_hour=9.08, metrics={"algbw_gbps": 236.5, "busbw_gbps": 236.5, "ranks": 2.0}),
    ]
    for engine, base, speed in (("vllm", 30.0, 1.0), ("sglang", 36.0, 0.8)):
        for concurrency in (1, 8):
            ttft = base * (1 + concurrency / 4)
            records.append(record(
                f"bench/test_serving.py::test_serving[{engine}-{concurrency}-H200:1]",
                around(ttft / 1e3, 64, 0.2), timer="llm_load:ttft",
                metrics=serving_metrics(ttft, 8.0 + concurrency, 7.5 + concurrency,
                                        900.0 * speed * concurrency ** 0.8, concurrency),
                params={"engine": engine, "concurrency": concurrency, "gpubench_target": "H200:1"}))
    key = "bench/test_kernel.py::test_kernel::gpubench_target='H200:1'"
    for variant, median in (("baseline", 2.0e-3), ("human", 1.0e-3), ("agent", 1.25e-3)):
        records.append(record(f"bench/test_kernel.py::test_kernel[c1-{variant}-H200:1]", around(median, 30),
                              metrics={"gbps": 1000.0 * 2e-3 / median}, variant=variant, commit="c1",
                              baseline_variant="baseline", comparison=key))
    return records


STREAM_SERVER = Path(__file__).parent / "servers" / "stream_server.py"

SUITE = """
import os
import sys

import pytest


def test_matmul(gpubench):
    gpubench.record([0.0016 * (1 + 0.001 * i) for i in range(21)], flops=1.1e12, dtype="bf16")


def test_kernel(gpubench, gpubench_variant):
    work = float(os.environ["WORK"])
    gpubench.record([0.001 * work * (1 + 0.001 * i) for i in range(21)], bytes=1e9)


@pytest.mark.parametrize("concurrency", [1, 2])
def test_serving(llm_server, llm_load, gpubench, concurrency):
    server = llm_server("command", argv=[sys.executable, os.environ["STREAM_SERVER"], "--port", "{port}",
                                         "--ttft-ms", "20", "--itl-ms", "5"])
    llm_load(server, ["hello"], num_requests=8, max_tokens=8, max_concurrency=concurrency)
"""

PROJECT = """
[tool.gpubench.variants.slow]
env = { WORK = "2" }
baseline = true

[tool.gpubench.variants.fast]
env = { WORK = "1" }
"""


def run_priced_suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *args: str) -> pytest.RunResult:
    """Kernels, a pair of variants and serving cells at two concurrencies, on a (fake) H200 so that they have a
    price, in a pytest of its own (the fake nvidia-smi must be found by a fresh process)."""
    monkeypatch.setenv("STREAM_SERVER", str(STREAM_SERVER))
    pytester.makepyprojecttoml(PROJECT)
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_subprocess("--gpu=H200:1", "-p", "no:cacheprovider", "--benchmark-json=out.json", *args)
    result.assert_outcomes(passed=5)
    return result
