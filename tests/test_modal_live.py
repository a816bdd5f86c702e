"""Live Modal tests: they start real containers and cost money, so they run only with credentials and
``-m modal_live``:

    modal token new                      # once
    bash scripts/test.sh -m modal_live tests/test_modal_live.py

What they use: one T4 (about $0.59/h) for under two minutes, and one CPU sandbox; well under $0.05 a run.
They check what the stand-in cannot: that Modal accepts the image, the GPU string and the sandbox options,
that a cell's record comes back from a real container with its GPU named, and that no sandbox of the run
is left afterwards.
"""

from __future__ import annotations

import json

import pytest

modal = pytest.importorskip("modal")

pytestmark = [
    pytest.mark.modal_live,
    pytest.mark.skipif(not (modal.config.config.get("token_id") and modal.config.config.get("token_secret")),
                       reason="no Modal credentials (run `modal token new`)"),
]


def test_a_torch_cell_runs_on_a_t4_and_leaves_nothing_running(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml("""
        [tool.gpubench.modal]
        app_name = "pytest-gpubench-live-test"
        requirements = ["torch", "numpy", "pytest>=8", "pytest-benchmark>=5.3"]
        expected_cell_s = 180
        budget = 0.5
    """)
    pytester.makepyfile(test_live="""
        def test_matmul(gpubench):
            import torch
            a = torch.randn(2048, 2048, device=gpubench.device)
            gpubench(torch.matmul, a, a, flops=2 * 2048**3, dtype="fp32")
    """)
    result = pytester.runpytest_subprocess("--gpu=T4", "--modal", "-p", "no:cacheprovider", "--benchmark-json=live.json",
                                           timeout=900)
    result.assert_outcomes(passed=1)
    (bench,) = json.loads((pytester.path / "live.json").read_text())["benchmarks"]
    details = bench["extra_info"]["gpubench"]
    assert details["timer"] == "cuda_event" and "T4" in details["host"]["gpu"]["name"]
    assert details["modal"]["gpu"] == "T4" and details["modal"]["cost_usd"] > 0
    run_sandboxes = list(modal.Sandbox.list(tags={"gpubench-run": details["modal"]["run"]}))
    assert [s.object_id for s in run_sandboxes if s.poll() is None] == []
