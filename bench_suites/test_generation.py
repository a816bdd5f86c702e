"""JAX vs PyTorch generation: one GPT-style decoder, the same weights and prompts, greedy decoding in both.

The model (``gpt_decoder.py``): Llama's shape, about 1B parameters in bf16 on a GPU target (16 layers, d_model
2048, 32 query and 8 key/value heads, SwiGLU 7168, vocab 32768), a tiny fp32 one on the CPU target. A batch of
8 prompts of 128 tokens generates 64 new tokens each on a GPU (4 x 16 -> 16 on the CPU).

The two frameworks are the variants ``torch`` and ``jax`` of one test, run in this process, so the run's speed-up
table compares them (torch is the baseline). Both cells hold the same figures:

- samples: per-token latency, one sample per decode step: host clock (``perf_counter``) from the step's call until
  its tokens are on the host (``.cpu()`` / ``np.asarray``), so a sample is what a user streaming tokens waits for
  (timer ``host_clock_sync_per_token``). The median gives ``tokens_per_s`` (batch / median step) and the report's
  $ per 1k tokens;
- ``per_token_p50_ms`` / ``p90`` / ``p99``: the same samples' percentiles;
- ``prefill_ms``: prompts in -> first new tokens on the host (median over the measured generations);
- ``decode_tokens_per_s``: batch x decode steps / their total time; ``generation_tokens_per_s``: batch x new
  tokens / (prefill + decode), what a whole generation delivers;
- ``compile_s`` (JAX: ahead-of-time lower + compile of prefill and decode step; torch eager: 0), and apart from it
  ``first_generation_s`` (the first generation, with lazy initialisation) and ``generation_warmup_s`` (the untimed
  generations before the measured ones): none of them is in the samples;
- ``decode_step_device_ms``: the decode step's time on the GPU's clock, with the plugin's device timers (torch:
  CUDA events; JAX: XLA's profiler, ``JaxDeviceTimer``, docs/RESULTS.md section 9 has the two side by side), steps
  queued back to back at the middle position. Beside the host per-token latency it says how much of a token's
  time is the device's and how much the host's (``decode_step_host_overhead_ms``);
- torch on a GPU also ``decode_step_kernels_ms``: the same eager step replayed from a CUDA graph, i.e. its kernels
  without Python launching them one by one. Eager torch keeps the GPU waiting for launches, so its device span
  is close to its host time; this figure is what its kernels themselves take, to set against XLA's;
- ``device_weight_gbps``: the bytes of weights a decode step reads (all but the embedding table) / device step
  time; it reads each once, so against the GPU's memory bandwidth this says how near the step is to its bound.

Which kernels make the two device figures differ, by name and time per step under each framework's own profiler:
``python benchmarks/generation_kernels.py --target gpu`` (each framework in a process of its own; CUPTI takes one
profiler at a time, and the JAX cell's timer is one).

The outputs are checked to agree before anything is timed (``gpt_decoder.check_agreement``): on the CPU in fp32
every greedy token must be equal; in bf16 the prefill logits must agree within 5 % and the first new tokens where
they are not near-ties (greedy paths may part after a near-tie, which is reported, not failed). Each cell compares
its own framework with the other, so a cell selected alone (``-k jax``) is checked too; the models are kept for the
module, so the first cell builds (and compiles) both, and its GPU-seconds hold JAX's compile time. The per-token
figures and $ per 1k tokens do not: they come from the measured generations only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pytest
from gpt_decoder import (
    CPU_PLAN,
    GPU_PLAN,
    PROMPT_SEED,
    WEIGHT_SEED,
    GenerationRun,
    JaxDecoder,
    Plan,
    TorchDecoder,
    check_agreement,
    make_prompts,
    make_weights,
)

from pytest_gpubench.hardware import Target
from pytest_gpubench.heartbeat import ticking
from pytest_gpubench.measure.sampler import SamplingPolicy, measure
from pytest_gpubench.measure.timers import make_timer

FRAMEWORKS = ("torch", "jax")
HOST_TIMER = "host_clock_sync_per_token"
@dataclass
class Models:
    """One target's weights, prompts, and each framework's model built from them on first use."""

    plan: Plan
    weights: dict[str, Any]
    prompts: np.ndarray
    torch_device: str
    jax_device: Any
    decoders: dict[str, Any] = field(default_factory=dict)
    first_runs: dict[str, GenerationRun] = field(default_factory=dict)
    first_run_s: dict[str, float] = field(default_factory=dict)

    def decoder(self, framework: str) -> Any:
        if framework not in self.decoders:
            if framework == "torch":
                self.decoders[framework] = TorchDecoder(self.weights, self.plan.config, self.plan.shape, self.prompts,
                                                        self.torch_device)
            else:
                self.decoders[framework] = JaxDecoder(self.weights, self.plan.config, self.plan.shape, self.prompts,
                                                      self.jax_device)
        return self.decoders[framework]

    def first_run(self, framework: str) -> GenerationRun:
        """The framework's first generation (lazy initialisation included), kept as its reference output."""
        if framework not in self.first_runs:
            decoder = self.decoder(framework)
            start = time.perf_counter()
            self.first_runs[framework] = decoder.generate()
            self.first_run_s[framework] = time.perf_counter() - start
        return self.first_runs[framework]

    def close(self) -> None:
        for decoder in self.decoders.values():
            decoder.close()
        self.decoders.clear()
        self.weights.clear()


class ModelStore:
    """Module-wide, so the torch and jax cells of one target share one set of weights (and the JAX model compiled
    for the check in the torch cell is the one the jax cell times; its compile time is kept with it)."""

    def __init__(self) -> None:
        self._by_target: dict[str, Models] = {}

    def models(self, target: Target, torch_device: str) -> Models:
        if target.id not in self._by_target:
            import jax

            for other in self._by_target.values():  # one target's 2 GB of weights at a time
                other.close()
            self._by_target.clear()
            plan = CPU_PLAN if target.is_cpu else GPU_PLAN
            jax_device = jax.devices("cpu" if target.is_cpu else "gpu")[0]
            weights = make_weights(plan.config, plan.shape.max_seq, WEIGHT_SEED, torch_device)
            self._by_target[target.id] = Models(plan, weights, make_prompts(plan.config, plan.shape, PROMPT_SEED),
                                                torch_device, jax_device)
        return self._by_target[target.id]

    def close(self) -> None:
        for models in self._by_target.values():
            models.close()
        self._by_target.clear()


@pytest.fixture(scope="module")
def generation_models() -> Iterator[ModelStore]:
    store = ModelStore()
    yield store
    store.close()


def _require_frameworks(target: Target) -> None:
    need = "the JAX vs PyTorch comparison needs both frameworks: pip install 'pytest-gpubench[torch,jax]'"
    torch = pytest.importorskip("torch", reason=need)
    jax = pytest.importorskip("jax", reason=need)
    if not target.is_cpu:
        if not torch.cuda.is_available():
            pytest.skip(f"torch has no CUDA here, and {target.id} needs it")
        if jax.default_backend() != "gpu":
            pytest.skip(f"jax has no GPU backend here (pip install 'jax[cuda13]'), and {target.id} needs it")


def _device_policy(policy: SamplingPolicy, on_gpu: bool) -> SamplingPolicy:
    """The run's sampling policy, capped for the decode step's device figure: it stands beside the samples, and a
    JAX device batch costs a trace and 0.5 s of lead-in, so 2 s of measuring is plenty."""
    return replace(policy, max_time_s=min(policy.max_time_s, 2.0 if on_gpu else 0.5))


def _percentile_ms(samples: np.ndarray, q: float) -> float:
    return float(np.percentile(samples, q)) * 1e3


@pytest.mark.variants(*FRAMEWORKS)
def test_generation(request: pytest.FixtureRequest, gpubench: Any, gpubench_variant: Any,
                    generation_models: ModelStore) -> None:
    target: Target = gpubench.target
    _require_frameworks(target)
    framework = str(gpubench_variant)
    other = next(f for f in FRAMEWORKS if f != framework)
    on_gpu = not target.is_cpu
    with ticking(request.config, request.node.nodeid, "weights") as heartbeat:
        models = generation_models.models(target, gpubench.device)
        plan, shape = models.plan, models.plan.shape
        heartbeat.set_phase(f"{framework}: build and compile")
        decoder = models.decoder(framework)
        heartbeat.set_phase("outputs: torch against jax")
        agreement = check_agreement(models.first_run("torch"), models.first_run("jax"), plan.config.dtype)
        reference = models.first_run(framework)

        heartbeat.set_phase("warm-up generations")
        start = time.perf_counter()
        for _ in range(plan.warmup_runs):
            decoder.generate()
        warmup_s = time.perf_counter() - start

        heartbeat.set_phase("measured generations")
        runs = []
        for index in range(plan.measured_runs):
            runs.append(decoder.generate())
            heartbeat.beat(f"{index + 1} of {plan.measured_runs}")
        repeatable = all(np.array_equal(run.tokens, reference.tokens) for run in runs)
        if plan.config.dtype == "fp32":
            assert repeatable, f"{framework}: greedy tokens changed from one fp32 generation to the next"

        heartbeat.set_phase("decode step on the device's clock")
        middle = shape.prompt_len + shape.new_tokens // 2
        policy = _device_policy(gpubench.policy, on_gpu)
        # on the CPU target the host's clock is the device's; "jax_host" also where jax's default backend is a
        # GPU's (a cpu cell on a GPU host), whose profiler would find none of this cell's work on the GPU
        timer_name = ("cuda" if framework == "torch" else "jax") if on_gpu else ("cpu" if framework == "torch" else
                                                                                 "jax_host")
        device = measure(decoder.decode_step_at(middle), make_timer(timer_name, "hot"), policy)
        kernels = None
        kernels_note = ""
        if on_gpu and framework == "torch":
            heartbeat.set_phase("decode step replayed from a CUDA graph")
            try:
                replay = decoder.graph_step_at(middle)
            except RuntimeError as error:  # a kernel that cannot be captured: say so rather than guess
                kernels_note = f"CUDA graph capture failed: {str(error).splitlines()[0][:200]}"
            else:
                kernels = measure(replay, make_timer("cuda", "hot"), policy)

    steps = np.concatenate([np.asarray(run.step_s) for run in runs])
    prefill_s = float(np.median([run.prefill_s for run in runs]))
    decode_rate = shape.batch * shape.decode_steps * len(runs) / float(sum(run.decode_s for run in runs))
    generation_rate = float(np.median([shape.batch * shape.new_tokens / (run.prefill_s + run.decode_s)
                                       for run in runs]))
    device_step_s = device.summary.median
    metrics = {
        "prefill_ms": prefill_s * 1e3,
        "per_token_p50_ms": _percentile_ms(steps, 50),
        "per_token_p90_ms": _percentile_ms(steps, 90),
        "per_token_p99_ms": _percentile_ms(steps, 99),
        "decode_tokens_per_s": decode_rate,
        "generation_tokens_per_s": generation_rate,
        "compile_s": decoder.compile_s,
        "first_generation_s": models.first_run_s[framework],
        "generation_warmup_s": warmup_s,
        "decode_step_device_ms": device_step_s * 1e3,
        "decode_step_host_overhead_ms": (float(np.median(steps)) - device_step_s) * 1e3,
        "device_weight_gbps": plan.config.decode_weight_bytes / device_step_s / 1e9,
        "logits_rel_err": agreement.logits_rel_err,
        "tokens_agree_pct": 100 * agreement.tokens_agree,
    }
    if kernels is not None:
        metrics["decode_step_kernels_ms"] = kernels.summary.median * 1e3
    price = target.price_per_hour
    cost: dict[str, Any] = {"usd_per_hour": price}
    if price is None:
        cost["usd_per_1k_tokens"] = f"n/a: {target.id} has no price"
    else:
        cost["usd_per_1k_tokens_decode"] = price / 3600 / (shape.batch / float(np.median(steps))) * 1000
        cost["usd_per_1k_tokens_end_to_end"] = price / 3600 / generation_rate * 1000
    gpubench.extra_info["generation"] = {
        "framework": framework,
        "model": plan.config.describe(),
        "batch": shape.batch, "prompt_len": shape.prompt_len, "new_tokens": shape.new_tokens,
        "warmup_runs": plan.warmup_runs, "measured_runs": plan.measured_runs,
        "samples": f"{HOST_TIMER}: perf_counter from a decode step's call until its tokens are on the host, "
                   f"{shape.decode_steps} steps x {plan.measured_runs} generations",
        "compile": decoder.compile_note,
        "weights": (f"made once by torch on {gpubench.device} (seed {WEIGHT_SEED}); jax reads "
                    + ("the same buffers (DLPack)" if models.decoder("jax").weights_shared else
                       "a copy made through the host")),
        "device_timer": f"{device.timer}/{device.cache}, decode step at position {middle}: {device.stop_reason}",
        "kernels_timer": (f"{kernels.timer}/{kernels.cache} over CUDA graph replays: {kernels.stop_reason}"
                          if kernels is not None else kernels_note or "n/a"),
        "repeatable_tokens": repeatable,
        "agreement": {"against": other, **agreement.as_json()},
        "cost": cost,
    }
    gpubench.record(steps.tolist(), timer=HOST_TIMER, tokens=shape.batch, dtype=plan.config.dtype, metrics=metrics)
