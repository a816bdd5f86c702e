"""Serving: an OpenAI-compatible server per cell, a streaming load at several concurrency levels, TTFT as the
cell's samples and throughput, TPOT, ITL, E2EL and goodput beside them.

By default the model is a tiny random-weight Llama built offline, served by `transformers serve`, so the
suite runs on a CPU-only machine. Set GPUBENCH_SERVING_MODEL to a local model folder (or hub id, where
the host can download) to serve a real model; vLLM cells run where vLLM is installed.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from pytest_gpubench.serving.datasets import random_prompts
from pytest_gpubench.serving.metrics import Slo

ENGINES = ["transformers", "vllm"]
CONCURRENCY = [1, 4]


@pytest.fixture(scope="session")
def serving_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    configured = os.environ.get("GPUBENCH_SERVING_MODEL")
    if configured:
        return configured
    pytest.importorskip("transformers", reason="the serving suite needs the serving extra: pip install 'pytest-gpubench[serving]'")
    from pytest_gpubench.serving.tiny_model import build_tiny_llama

    return str(build_tiny_llama(Path(tmp_path_factory.mktemp("models")) / "tiny-llama"))


@pytest.mark.parametrize("concurrency", CONCURRENCY)
@pytest.mark.parametrize("engine", ENGINES)
def test_serving(llm_server, llm_load, gpubench, serving_model, engine, concurrency):
    if engine == "vllm" and importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed here (pip install vllm on a GPU host runs these cells)")
    if engine == "transformers" and importlib.util.find_spec("fastapi") is None:
        pytest.skip("transformers serve needs the serving extra: pip install 'pytest-gpubench[serving]'")
    extra = {"ignore_eos": True} if engine == "vllm" else {}
    server = llm_server(engine, model=serving_model, ready_timeout_s=1800)
    prompts = random_prompts(serving_model, num=32, input_len=64)
    report = llm_load(server, prompts, api="chat", model=serving_model, max_tokens=32, num_requests=4 * concurrency,
                      max_concurrency=concurrency, warmup_requests=1, extra_body=extra, slo=Slo(ttft_ms=500, tpot_ms=100))
    assert report.metrics.failed == 0, report.metrics.first_errors
