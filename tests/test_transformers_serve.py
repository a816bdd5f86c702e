"""A real `transformers serve` on a tiny random-weight model built offline: the whole serving path on CPU."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from pytest_gpubench.serving.tiny_model import build_tiny_llama  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_tiny_model_served_for_real_reports_sane_metrics(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tiny_model: Path, api: str
) -> None:
    monkeypatch.setenv("TINY_MODEL", str(tiny_model))
    pytester.makepyfile(
        test_serve=f"""
        import os

        from pytest_gpubench.serving.datasets import random_prompts

        def test_serve(llm_server, llm_load, gpubench):
            model = os.environ["TINY_MODEL"]
            server = llm_server("transformers", model=model, ready_timeout_s=120)
            prompts = random_prompts(model, num=4, input_len=32)
            report = llm_load(server, prompts, api="{api}", model=model, num_requests=6, max_tokens=12,
                              max_concurrency=3, warmup_requests=1)
            results = [r for r in report.outcome.results if r.ok]
            assert len(results) == 6
            assert [r.output_tokens for r in results] == [12] * 6   # from the server's usage
            assert all(len(r.chunk_times) > 1 for r in results)  # streamed: content came in several events
            # <= and >= 0, not < and > 0: on a loaded machine a tiny model's whole stream can arrive in one read,
            # every chunk stamped with one time (TPOT and ITL 0; it happened in 2 of 12 loaded runs)
            assert [r.prompt_tokens for r in results if r.prompt_tokens] and all(r.ttft <= r.e2el for r in results)
            m = report.metrics
            assert m.ttft.median <= m.ttft.percentiles[90] <= m.ttft.percentiles[99]
            assert m.itl.median <= m.itl.percentiles[99] and m.tpot is not None and m.tpot.median >= 0
        """
    )
    result = pytester.runpytest("--gpu=cpu", "-p", "no:cacheprovider", "--benchmark-json=out.json")
    result.assert_outcomes(passed=1)
    (bench,) = json.loads((pytester.path / "out.json").read_text())["benchmarks"]
    metrics = bench["extra_info"]["gpubench"]["metrics"]
    assert metrics["completed"] == 6 and metrics["failed"] == 0 and metrics["missing_usage"] == 0
    assert metrics["output_token_throughput"] > 0
    assert len(bench["stats"]["data"]) == 6


def test_missing_model_folder_is_named(pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # heartbeats every 0.5 s, so their lines come before the failure's as they do on a loaded machine at 10 s
    monkeypatch.setenv("GPUBENCH_HEARTBEAT_S", "0.5")
    pytester.makepyfile(
        test_serve=f"""
        def test_serve(llm_server):
            llm_server("transformers", model="{tmp_path / 'no-such-model'}", ready_timeout_s=120)
        """
    )
    result = pytester.runpytest("--gpu=cpu", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    assert any(line.startswith("[gpubench] ") for line in result.stdout.lines)  # the heartbeats were there
    # the failure's own line, wherever heartbeats put it: "[<class>] server 'transformers' ..."
    failures = [line for line in result.stdout.lines if re.match(r"\[[a-z-]+\] server 'transformers' ", line)]
    assert failures and all(line.startswith("[model-not-found]") for line in failures), result.stdout.str()
