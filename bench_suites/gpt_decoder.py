"""A GPT-style decoder written twice, in PyTorch (eager) and in JAX (jit), over one set of weights.

Llama's shape: RMSNorm before attention and before the MLP, rotary positions, grouped-query attention over a KV
cache, a SwiGLU MLP, an output head of its own. (Not tied to the embedding: with random weights a tied head mostly
predicts the token it was given, so greedy paths repeat the last prompt token whatever the other weights are, and
agreeing tokens would prove nothing.) The weights are made once, by torch's generator
on the cell's device (numpy needs 1.3 s per 1e8 normals on the 2-core development machine, ~13 s for a 1B model;
torch on a GPU takes milliseconds), and the JAX model gets the *same buffers* through DLPack, so both frameworks
compute one model from identical bits; the rotary tables are computed once in numpy (float64) and handed over the
same way, because two frameworks' cos/sin differ in their last bits.

Each implementation is what a user of that framework would write:

- torch: eager, a KV cache allocated once; a decode step writes its keys and values into the cache and attends
  to the filled part of it (``scaled_dot_product_attention``, grouped-query through ``enable_gqa``, torch >= 2.5);
- JAX: ``jax.jit`` of the prefill and of one decode step, compiled ahead of time (so compile time is measured on
  its own), the layers unrolled over arrays of each layer's own (views of torch's stacked weights), a static-shape
  cache a layer updated with ``lax.dynamic_update_slice`` and donated, so XLA writes it in place, and
  ``jax.nn.dot_product_attention`` masked to the filled positions.

Both compute logits in the model's dtype (as transformers does) and pick tokens greedily with argmax, which in both
frameworks returns the first of equal maxima.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

LAYER_WEIGHTS = ("attn_norm", "wq", "wk", "wv", "wo", "mlp_norm", "w_gate", "w_up", "w_down")
INIT_STD = 0.02  # GPT-2's initialisation; output projections get INIT_STD / sqrt(2 * layers), as GPT-2's do


@dataclass(frozen=True)
class DecoderConfig:
    vocab: int
    d_model: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    d_ff: int
    dtype: str  # "bf16" or "fp32"
    norm_eps: float = 1e-5
    rope_theta: float = 10_000.0

    def __post_init__(self) -> None:
        if self.heads % self.kv_heads:
            raise ValueError(f"heads={self.heads} must be a multiple of kv_heads={self.kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for rotary positions")
        if self.dtype not in ("bf16", "fp32"):
            raise ValueError(f"dtype={self.dtype!r}; use bf16 or fp32")

    @property
    def params(self) -> int:
        attention = self.d_model * self.head_dim * (2 * self.heads + 2 * self.kv_heads)
        mlp = 3 * self.d_model * self.d_ff
        return 2 * self.vocab * self.d_model + self.layers * (attention + mlp + 2 * self.d_model) + self.d_model

    @property
    def bytes_per_param(self) -> int:
        return 2 if self.dtype == "bf16" else 4

    @property
    def decode_weight_bytes(self) -> int:
        """Bytes of weights one decode step reads: all but the embedding table, of which it gathers a row a token."""
        return (self.params - self.vocab * self.d_model) * self.bytes_per_param

    def describe(self) -> dict[str, Any]:
        return {"params": self.params, "layers": self.layers, "d_model": self.d_model, "heads": self.heads,
                "kv_heads": self.kv_heads, "head_dim": self.head_dim, "d_ff": self.d_ff, "vocab": self.vocab,
                "dtype": self.dtype, "weights_gb": self.params * self.bytes_per_param / 1e9}


@dataclass(frozen=True)
class GenerationShape:
    batch: int
    prompt_len: int
    new_tokens: int

    @property
    def max_seq(self) -> int:
        return self.prompt_len + self.new_tokens

    @property
    def decode_steps(self) -> int:
        """The prefill yields the first new token; each later one takes a decode step."""
        return self.new_tokens - 1


@dataclass(frozen=True)
class GenerationRun:
    """One greedy generation of the batch, timed on the host with a sync per token."""

    prefill_s: float  # prompts in -> the first new tokens on the host
    step_s: tuple[float, ...]  # each decode step: call -> its tokens on the host
    tokens: np.ndarray  # [batch, new_tokens] int32
    prefill_logits: np.ndarray  # [batch, vocab] float32: the logits that chose the first new tokens

    @property
    def decode_s(self) -> float:
        return float(sum(self.step_s))


WEIGHT_SEED, PROMPT_SEED = 0, 1


@dataclass(frozen=True)
class Plan:
    """What the generation suite runs on a target: the model, the batch, and how many generations."""

    config: DecoderConfig
    shape: GenerationShape
    warmup_runs: int  # untimed generations after the first, before the measured ones
    measured_runs: int


GPU_PLAN = Plan(DecoderConfig(vocab=32768, d_model=2048, layers=16, heads=32, kv_heads=8, head_dim=64, d_ff=7168,
                              dtype="bf16"),
                GenerationShape(batch=8, prompt_len=128, new_tokens=64), warmup_runs=2, measured_runs=5)
CPU_PLAN = Plan(DecoderConfig(vocab=512, d_model=64, layers=2, heads=4, kv_heads=2, head_dim=16, d_ff=192,
                              dtype="fp32"),
                GenerationShape(batch=4, prompt_len=16, new_tokens=16), warmup_runs=1, measured_runs=3)


def weight_shapes(config: DecoderConfig, max_seq: int) -> dict[str, tuple[int, ...]]:
    c = config
    q, kv = c.heads * c.head_dim, c.kv_heads * c.head_dim
    return {
        "embed": (c.vocab, c.d_model),
        "attn_norm": (c.layers, c.d_model),
        "wq": (c.layers, c.d_model, q),
        "wk": (c.layers, c.d_model, kv),
        "wv": (c.layers, c.d_model, kv),
        "wo": (c.layers, q, c.d_model),
        "mlp_norm": (c.layers, c.d_model),
        "w_gate": (c.layers, c.d_model, c.d_ff),
        "w_up": (c.layers, c.d_model, c.d_ff),
        "w_down": (c.layers, c.d_ff, c.d_model),
        "final_norm": (c.d_model,),
        "lm_head": (c.d_model, c.vocab),
        "rope_cos": (max_seq, c.head_dim),
        "rope_sin": (max_seq, c.head_dim),
    }


def rope_tables(config: DecoderConfig, max_seq: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin for the rotate-half form (transformers' Llama): each frequency twice, [max_seq, head_dim]."""
    inv_freq = 1.0 / config.rope_theta ** (np.arange(0, config.head_dim, 2, dtype=np.float64) / config.head_dim)
    angles = np.outer(np.arange(max_seq, dtype=np.float64), inv_freq)
    angles = np.concatenate([angles, angles], axis=-1)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def make_weights(config: DecoderConfig, max_seq: int, seed: int, device: str) -> dict[str, Any]:
    """The model's weights as torch tensors on ``device``, from ``seed`` (the same seed gives the same bits)."""
    import torch

    dtype = torch_dtype(config.dtype)
    generator = torch.Generator(device=device).manual_seed(seed)
    out_std = INIT_STD / math.sqrt(2 * config.layers)
    stds = {"wo": out_std, "w_down": out_std}
    weights: dict[str, Any] = {}
    for name, shape in weight_shapes(config, max_seq).items():
        if name.startswith("rope_"):
            continue
        noise = torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
        if name.endswith("norm"):
            noise = 1.0 + 0.1 * noise  # not all ones, so a scale applied in the wrong place shows
        else:
            noise.mul_(stds.get(name, INIT_STD))
        weights[name] = noise.to(dtype)
    cos, sin = rope_tables(config, max_seq)
    weights["rope_cos"] = torch.from_numpy(cos).to(device=device, dtype=dtype)
    weights["rope_sin"] = torch.from_numpy(sin).to(device=device, dtype=dtype)
    if device != "cpu":
        torch.cuda.synchronize()  # the JAX side takes these buffers next, on a stream torch does not order
    return weights


def make_prompts(config: DecoderConfig, shape: GenerationShape, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, config.vocab, size=(shape.batch, shape.prompt_len), dtype=np.int32)


def torch_dtype(name: str) -> Any:
    import torch

    return {"bf16": torch.bfloat16, "fp32": torch.float32}[name]


# -- PyTorch, eager -------------------------------------------------------------------------------------------


class TorchDecoder:
    """Eager PyTorch with a KV cache allocated once ([layers, batch, kv_heads, max_seq, head_dim])."""

    framework = "torch"
    compile_note = "eager: nothing is compiled (torch.compile is not used)"

    def __init__(self, weights: Mapping[str, Any], config: DecoderConfig, shape: GenerationShape,
                 prompts: np.ndarray, device: str) -> None:
        import torch
        import torch.nn.functional as functional

        self._torch, self._functional = torch, functional
        self.config, self.shape, self.device = config, shape, device
        self.w = dict(weights)
        cache_shape = (config.layers, shape.batch, config.kv_heads, shape.max_seq, config.head_dim)
        self._k = torch.zeros(cache_shape, dtype=torch_dtype(config.dtype), device=device)
        self._v = torch.zeros_like(self._k)
        self._prompts = torch.from_numpy(prompts.astype(np.int64)).to(device)
        self.compile_s = 0.0

    def _sync(self) -> None:
        if self.device != "cpu":
            self._torch.cuda.synchronize()

    def _norm(self, x: Any, weight: Any) -> Any:
        # transformers' LlamaRMSNorm: the statistics in fp32, the scale in the model's dtype
        torch = self._torch
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.config.norm_eps)
        return weight * xf.to(x.dtype)

    def _rope(self, x: Any, start: int) -> Any:
        length, half = x.shape[2], self.config.head_dim // 2
        cos = self.w["rope_cos"][start:start + length]
        sin = self.w["rope_sin"][start:start + length]
        rotated = self._torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    def _forward(self, tokens: Any, start: int) -> Any:
        """Logits of the last position, [batch, vocab], in the model's dtype; writes the cache at start..."""
        c, w = self.config, self.w
        batch, length = tokens.shape
        if length > 1 and start != 0:
            raise ValueError("a multi-token forward is the prefill, from position 0")  # is_causal aligns top-left
        x = self._functional.embedding(tokens, w["embed"])
        for layer in range(c.layers):
            h = self._norm(x, w["attn_norm"][layer])
            q = (h @ w["wq"][layer]).view(batch, length, c.heads, c.head_dim).transpose(1, 2)
            k = (h @ w["wk"][layer]).view(batch, length, c.kv_heads, c.head_dim).transpose(1, 2)
            v = (h @ w["wv"][layer]).view(batch, length, c.kv_heads, c.head_dim).transpose(1, 2)
            q, k = self._rope(q, start), self._rope(k, start)
            end = start + length
            self._k[layer, :, :, start:end] = k
            self._v[layer, :, :, start:end] = v
            attention = self._functional.scaled_dot_product_attention(
                q, self._k[layer, :, :, :end], self._v[layer, :, :, :end], is_causal=length > 1, enable_gqa=True)
            x = x + attention.transpose(1, 2).reshape(batch, length, c.heads * c.head_dim) @ w["wo"][layer]
            h = self._norm(x, w["mlp_norm"][layer])
            x = x + (self._functional.silu(h @ w["w_gate"][layer]) * (h @ w["w_up"][layer])) @ w["w_down"][layer]
        return self._norm(x[:, -1], w["final_norm"]) @ w["lm_head"]

    def generate(self) -> GenerationRun:
        torch = self._torch
        clock = time.perf_counter
        with torch.inference_mode():
            start = clock()
            logits = self._forward(self._prompts, 0)
            token = logits.argmax(-1)
            host = [token.cpu()]  # the copy to the host waits for the GPU: the user has the tokens now
            prefill_s = clock() - start
            steps = []
            for i in range(self.shape.decode_steps):
                step_start = clock()
                token = self._forward(token[:, None], self.shape.prompt_len + i).argmax(-1)
                host.append(token.cpu())
                steps.append(clock() - step_start)
            self._last_token = token
            return GenerationRun(prefill_s, tuple(steps), torch.stack(host, 1).numpy().astype(np.int32),
                                 logits.float().cpu().numpy())

    def decode_step_at(self, position: int) -> Callable[[], Any]:
        """One decode step at a fixed position, again and again, for a device timer: the same work each call."""
        torch = self._torch
        token = self._last_token.clone()

        def step() -> Any:
            with torch.inference_mode():
                return self._forward(token[:, None], position).argmax(-1)

        return step

    def graph_step_at(self, position: int) -> Callable[[], Any]:
        """The same eager step captured once in a CUDA graph: replays run the very kernels eager launches, with
        no Python between them, so their device time is the kernels' own and not the launches' pace."""
        torch = self._torch
        token = self._last_token.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):  # PyTorch's recipe: warm up on a side stream before capture
                self._forward(token[:, None], position).argmax(-1)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            self._graph_out = self._forward(token[:, None], position).argmax(-1)
        self._graph = graph  # kept alive while the timer replays it
        return graph.replay

    def close(self) -> None:
        self._graph = None
        self._graph_out = None


# -- JAX, jit -------------------------------------------------------------------------------------------------


def _jax_norm(x: Any, weight: Any, eps: float) -> Any:
    import jax
    import jax.numpy as jnp

    xf = x.astype(jnp.float32)
    xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return weight * xf.astype(x.dtype)


def _jax_rope(x: Any, cos: Any, sin: Any) -> Any:
    import jax.numpy as jnp

    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def _jax_forward(params: Mapping[str, Any], cache_k: list[Any], cache_v: list[Any], tokens: Any, start: Any, *,
                 config: DecoderConfig) -> tuple[Any, list[Any], list[Any]]:
    """Logits of the last position and the updated caches (one [batch, max_seq, kv_heads, head_dim] a layer)."""
    import jax
    import jax.numpy as jnp

    c = config
    batch, length = tokens.shape
    max_seq = cache_k[0].shape[1]
    x = params["embed"][tokens]
    cos = jax.lax.dynamic_slice_in_dim(params["rope_cos"], start, length)[None, :, None, :]
    sin = jax.lax.dynamic_slice_in_dim(params["rope_sin"], start, length)[None, :, None, :]
    # a decode step attends over the whole static cache, masked to the positions filled so far
    filled = (jnp.arange(max_seq) <= start)[None, None, None, :]
    new_k, new_v = [], []
    # A Python loop, unrolled by tracing, over arrays of each layer's own: a lax.scan over stacked weights
    # compiles faster, but XLA:GPU copies each layer's slice of a stacked weight before its matmul unless
    # dynamic-slice fusion is on (off by default until mid-2026), which would triple a decode step's memory traffic.
    for weights, layer_k, layer_v in zip(params["layers"], cache_k, cache_v):
        h = _jax_norm(x, weights["attn_norm"], c.norm_eps)
        q = (h @ weights["wq"]).reshape(batch, length, c.heads, c.head_dim)
        k = (h @ weights["wk"]).reshape(batch, length, c.kv_heads, c.head_dim)
        v = (h @ weights["wv"]).reshape(batch, length, c.kv_heads, c.head_dim)
        q, k = _jax_rope(q, cos, sin), _jax_rope(k, cos, sin)
        layer_k = jax.lax.dynamic_update_slice(layer_k, k, (0, start, 0, 0))
        layer_v = jax.lax.dynamic_update_slice(layer_v, v, (0, start, 0, 0))
        if length > 1:  # the prefill (from position 0) attends causally within the prompt
            attention = jax.nn.dot_product_attention(q, k, v, is_causal=True)
        else:
            attention = jax.nn.dot_product_attention(q, layer_k, layer_v, mask=filled)
        x = x + attention.reshape(batch, length, c.heads * c.head_dim) @ weights["wo"]
        h = _jax_norm(x, weights["mlp_norm"], c.norm_eps)
        x = x + (jax.nn.silu(h @ weights["w_gate"]) * (h @ weights["w_up"])) @ weights["w_down"]
        new_k.append(layer_k)
        new_v.append(layer_v)
    logits = _jax_norm(x[:, -1], params["final_norm"], c.norm_eps) @ params["lm_head"]
    return logits, new_k, new_v


def _jax_prefill(params: Mapping[str, Any], cache_k: list[Any], cache_v: list[Any], prompts: Any, *,
                 config: DecoderConfig) -> tuple[Any, Any, list[Any], list[Any]]:
    import jax.numpy as jnp

    logits, cache_k, cache_v = _jax_forward(params, cache_k, cache_v, prompts, jnp.int32(0), config=config)
    return jnp.argmax(logits, axis=-1).astype(jnp.int32), logits.astype(jnp.float32), cache_k, cache_v


def _jax_decode(params: Mapping[str, Any], cache_k: list[Any], cache_v: list[Any], token: Any, position: Any, *,
                config: DecoderConfig) -> tuple[Any, list[Any], list[Any]]:
    import jax.numpy as jnp

    logits, cache_k, cache_v = _jax_forward(params, cache_k, cache_v, token[:, None], position, config=config)
    return jnp.argmax(logits, axis=-1).astype(jnp.int32), cache_k, cache_v


def share_with_jax(tensor: Any, device: Any) -> tuple[Any, bool]:
    """The torch tensor as a JAX array on ``device``: the same buffer through DLPack where both frameworks can share
    it, else a copy through the host (fp32 holds bf16 exactly). Returns (array, shared)."""
    import jax
    import jax.numpy as jnp

    try:
        array = jax.dlpack.from_dlpack(tensor)
        if array.devices() == {device}:
            return array, True
    except (TypeError, ValueError, RuntimeError, BufferError):
        pass
    host = tensor.float().cpu().numpy()
    return jax.device_put(jnp.asarray(host, dtype=jnp.dtype(str(tensor.dtype).rsplit(".", 1)[-1])), device), False


class JaxDecoder:
    """JAX, prefill and decode step each compiled once ahead of time, caches donated and updated in place."""

    framework = "jax"
    compile_note = "jax.jit(...).lower(...).compile() of the prefill and of the decode step, before the first call"

    def __init__(self, weights: Mapping[str, Any], config: DecoderConfig, shape: GenerationShape,
                 prompts: np.ndarray, device: Any) -> None:
        import jax
        import jax.numpy as jnp

        self._jax = jax
        self.config, self.shape, self.device = config, shape, device
        flags: list[bool] = []

        def share(tensor: Any) -> Any:
            array, shared = share_with_jax(tensor, device)
            flags.append(shared)
            return array

        # each layer's weights are views of torch's stacked tensors: the same memory, no copy
        self.params: dict[str, Any] = {name: share(tensor) for name, tensor in weights.items()
                                       if name not in LAYER_WEIGHTS}
        self.params["layers"] = [{name: share(weights[name][layer]) for name in LAYER_WEIGHTS}
                                 for layer in range(config.layers)]
        self.weights_shared = all(flags)
        dtype = {"bf16": jnp.bfloat16, "fp32": jnp.float32}[config.dtype]
        cache_shape = (shape.batch, shape.max_seq, config.kv_heads, config.head_dim)
        self._k = [jax.device_put(jnp.zeros(cache_shape, dtype), device) for _ in range(config.layers)]
        self._v = [jax.device_put(jnp.zeros(cache_shape, dtype), device) for _ in range(config.layers)]
        self._prompts = jax.device_put(jnp.asarray(prompts, jnp.int32), device)
        token = jax.ShapeDtypeStruct((shape.batch,), jnp.int32)
        position = jax.ShapeDtypeStruct((), jnp.int32)
        start = time.perf_counter()
        # the caches are donated: XLA reuses their buffers for the updated caches instead of copying them
        self._prefill = jax.jit(partial(_jax_prefill, config=config), donate_argnums=(1, 2)).lower(
            self.params, self._k, self._v, self._prompts).compile()
        self._decode = jax.jit(partial(_jax_decode, config=config), donate_argnums=(1, 2)).lower(
            self.params, self._k, self._v, token, position).compile()
        self.compile_s = time.perf_counter() - start

    def generate(self) -> GenerationRun:
        clock = time.perf_counter
        start = clock()
        token, logits, self._k, self._v = self._prefill(self.params, self._k, self._v, self._prompts)
        host = [np.asarray(token)]  # waits for the device: the user has the tokens now
        prefill_s = clock() - start
        steps = []
        for i in range(self.shape.decode_steps):
            step_start = clock()
            token, self._k, self._v = self._decode(self.params, self._k, self._v, token,
                                                   np.int32(self.shape.prompt_len + i))
            host.append(np.asarray(token))
            steps.append(clock() - step_start)
        self._last_token = token
        return GenerationRun(prefill_s, tuple(steps), np.stack(host, axis=1).astype(np.int32),
                             np.asarray(logits, dtype=np.float32))

    def decode_step_at(self, position: int) -> Callable[[], Any]:
        """One decode step at a fixed position, again and again, for a device timer. The caches are threaded from
        call to call (each call donates them); the step returns only its tokens, so a timer that keeps the last
        result never holds a donated buffer."""
        # the position lives on the device, so no call copies anything from the host in the timed stream
        token, index = self._last_token, self._jax.device_put(np.int32(position), self.device)

        def step() -> Any:
            next_token, self._k, self._v = self._decode(self.params, self._k, self._v, token, index)
            return next_token

        return step

    def close(self) -> None:
        self.params = {}


# -- do the two agree? ----------------------------------------------------------------------------------------

# bf16 keeps 8 significant bits (relative spacing 2**-8 = 0.4 %); two frameworks round after different kernels
# and fusions, and the differences add up over the layers. A wrong weight, a misplaced scale or a rotary off by
# one position changes the logits by tens of percent (independent weights: ~140 %), far above these bounds.
LOGITS_REL_TOL = {"fp32": 1e-4, "bf16": 5e-2}
# a row's first token is decided when the reference's best logit leads its second by more than this share of the
# row's logit RMS: closer than that, a bf16 rounding can swap the two, and a greedy path then diverges honestly
NEAR_TIE = {"fp32": 0.0, "bf16": 0.25}


class OutputsDisagree(AssertionError):
    """The two frameworks did not compute the same model from the same weights and prompts."""


@dataclass(frozen=True)
class Agreement:
    rule: str
    logits_rel_err: float  # ||a - b|| / ||b|| over the prefill logits of the whole batch
    logits_max_abs_diff: float
    rows_decided: int  # rows whose first token is not a near-tie
    first_tokens_agree: int  # rows whose first new token agrees
    tokens_agree: float  # share of all generated tokens that agree (paths may diverge after a near-tie)
    first_divergence_step: int | None  # the earliest new-token index where some row differs

    def as_json(self) -> dict[str, Any]:
        return dict(vars(self))


def check_agreement(torch_run: GenerationRun, jax_run: GenerationRun, dtype: str) -> Agreement:
    """Raise OutputsDisagree unless the two runs computed the same model.

    fp32: every greedy token equal, and the prefill logits within 1e-4 (relative). bf16: the prefill logits within
    5 % (relative), and the first new token equal in every row that is not a near-tie; later tokens are reported,
    not required, because after one near-tie flips a token the two greedy paths continue from different text."""
    a, b = torch_run.prefill_logits.astype(np.float64), jax_run.prefill_logits.astype(np.float64)
    if a.shape != b.shape or torch_run.tokens.shape != jax_run.tokens.shape:
        raise OutputsDisagree(f"torch and jax produced different shapes: logits {a.shape} vs {b.shape}, tokens "
                              f"{torch_run.tokens.shape} vs {jax_run.tokens.shape}")
    rel_err = float(np.linalg.norm(a - b)) / max(float(np.linalg.norm(b)), 1e-30)
    max_abs = float(np.max(np.abs(a - b)))
    same = torch_run.tokens == jax_run.tokens
    diverged = np.flatnonzero(~same.all(axis=0))
    first_divergence = int(diverged[0]) if diverged.size else None
    top2 = np.sort(b, axis=-1)[:, -2:]
    rms = np.sqrt(np.mean(b * b, axis=-1))
    decided = (top2[:, 1] - top2[:, 0]) > NEAR_TIE[dtype] * rms
    first_same = same[:, 0]
    agreement = Agreement(
        rule=("fp32: all greedy tokens equal, prefill logits within 1e-4" if dtype == "fp32" else
              "bf16: prefill logits within 5 %, first tokens equal where not a near-tie (top-2 gap > 0.25 x RMS)"),
        logits_rel_err=rel_err, logits_max_abs_diff=max_abs, rows_decided=int(decided.sum()),
        first_tokens_agree=int(first_same.sum()), tokens_agree=float(same.mean()),
        first_divergence_step=first_divergence)
    where = f"(relative error {rel_err:.3g}, largest difference {max_abs:.3g})"
    if rel_err > LOGITS_REL_TOL[dtype]:
        raise OutputsDisagree(
            f"torch and jax disagree on the prefill logits of the same weights and prompts: relative error "
            f"{rel_err:.3g} > {LOGITS_REL_TOL[dtype]:g} allowed for {dtype} {where}; greedy tokens agree at "
            f"{same.mean():.1%} of positions. The two implementations compute different models.")
    if dtype == "fp32" and first_divergence is not None:
        row = int(np.flatnonzero(~same[:, first_divergence])[0])
        raise OutputsDisagree(
            f"torch and jax greedy tokens differ in fp32 at new token {first_divergence} of row {row}: torch "
            f"{int(torch_run.tokens[row, first_divergence])}, jax {int(jax_run.tokens[row, first_divergence])} "
            f"{where}; {same.mean():.1%} of tokens agree")
    flipped = np.flatnonzero(decided & ~first_same)
    if flipped.size:
        row = int(flipped[0])
        raise OutputsDisagree(
            f"torch and jax choose different first tokens in {flipped.size} row(s) that are not near-ties: row "
            f"{row}: torch {int(torch_run.tokens[row, 0])}, jax {int(jax_run.tokens[row, 0])} {where}")
    return agreement
