"""Serving: an OpenAI-compatible server per cell, a streaming load at several concurrency levels, TTFT as the
cell's samples and throughput, TPOT, ITL, E2EL and goodput beside them.

By default the model is a random-weight Llama built offline: on a GPU target a 1.1 B-parameter one in
bfloat16 (a Llama 3.2 1B shape), swept over 1, 16, 64 and 256 requests in flight with continuous batching;
on the CPU target a tiny one at 1 and 4, so the suite runs on a CPU-only machine. Set
GPUBENCH_SERVING_MODEL to a local model folder (or hub id, where the host can download) to serve a real
model; vLLM cells run where vLLM is installed. A load whose client could not keep up is sent again with
more client processes, and the cell says so.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_gpubench.hardware import Target
from pytest_gpubench.serving.datasets import random_prompts
from pytest_gpubench.serving.metrics import Slo
from pytest_gpubench.session import get_session

ENGINES = ["transformers", "vllm"]


@dataclass(frozen=True)
class Sweep:
    """The load of one kind of target: which concurrency levels, and how much each request asks for."""

    model_size: str
    concurrency: tuple[int, ...]
    input_len: int
    max_tokens: int
    rounds: int  # requests a concurrency slot sends: the batch stays full for about this many rounds
    min_requests: int  # the low levels' floor, for enough TTFT samples

    def num_requests(self, concurrency: int) -> int:
        return max(self.rounds * concurrency, self.min_requests)


# One H200 (estimate, transformers serve): the 1B model builds in seconds and each cell's server starts in about
# 20 s; the loads are 16 requests one at a time, then 32, 128 and 512 requests of 64 tokens at 16, 64 and 256
# in flight.
GPU_SWEEP = Sweep("1b", (1, 16, 64, 256), input_len=128, max_tokens=64, rounds=2, min_requests=16)
CPU_SWEEP = Sweep("tiny", (1, 4), input_len=64, max_tokens=32, rounds=4, min_requests=4)


def sweep_for(target: Target) -> Sweep:
    return CPU_SWEEP if target.is_cpu else GPU_SWEEP


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The concurrency axis is the sweep of the run's targets: 1, 4 on a CPU, 1, 16, 64, 256 on a GPU (a run of
    both has every level, and each target's cells outside its own sweep skip)."""
    if metafunc.function is not test_serving:
        return
    targets = get_session(metafunc.config).targets
    levels = sorted({c for target in targets for c in sweep_for(target).concurrency}) or list(CPU_SWEEP.concurrency)
    metafunc.parametrize("engine", ENGINES)
    metafunc.parametrize("concurrency", levels)


@pytest.fixture(scope="session")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tmp_path_factory.mktemp("models"))


@pytest.fixture
def serving_model(model_folder: Path, gpubench_target: Target) -> str:
    configured = os.environ.get("GPUBENCH_SERVING_MODEL")
    if configured:
        return configured
    pytest.importorskip("transformers", reason="the serving suite needs the serving extra: pip install 'pytest-gpubench[serving]'")
    from pytest_gpubench.serving.tiny_model import build_random_llama

    size = sweep_for(gpubench_target).model_size
    return str(build_random_llama(model_folder / f"llama-{size}", size))  # once a session: a built folder is reused


def test_serving(llm_server, llm_load, gpubench, gpubench_target, serving_model, engine, concurrency):
    sweep = sweep_for(gpubench_target)
    if concurrency not in sweep.concurrency:
        pytest.skip(f"concurrency {concurrency} is not in the {gpubench_target.id} sweep "
                    f"({', '.join(map(str, sweep.concurrency))})")
    if engine == "vllm" and importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed here (pip install vllm on a GPU host runs these cells)")
    if engine == "transformers" and importlib.util.find_spec("fastapi") is None:
        pytest.skip("transformers serve needs the serving extra: pip install 'pytest-gpubench[serving]'")
    extra = {"ignore_eos": True} if engine == "vllm" else {}
    server = llm_server(engine, model=serving_model, ready_timeout_s=1800, continuous_batching=True)
    requests = sweep.num_requests(concurrency)
    # the warm-up runs at the cell's own concurrency: an engine's first batch of a size pays for its set-up
    # (CUDA graphs, buffers), which must not land in the timed requests
    warmup = concurrency
    # a prompt of its own for every request: a repeated one would be served from an engine's prefix cache
    prompts = random_prompts(serving_model, num=warmup + requests, input_len=sweep.input_len)
    report = llm_load(server, prompts, api="chat", model=serving_model, max_tokens=sweep.max_tokens,
                      num_requests=requests, max_concurrency=concurrency, warmup_requests=warmup, extra_body=extra,
                      slo=Slo(ttft_ms=500, tpot_ms=100), client_bound="rerun")
    assert report.metrics.failed == 0, report.metrics.first_errors
