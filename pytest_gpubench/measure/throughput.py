"""Throughput from the median time and the work one call does: TFLOP/s, GB/s, items/s, tokens/s, % of peak."""

from __future__ import annotations

from dataclasses import dataclass

from ..hardware import Target

DTYPE_ALIASES = {
    "float32": "fp32", "float": "fp32", "fp32": "fp32", "tf32": "tf32",
    "bfloat16": "bf16", "bf16": "bf16", "float16": "fp16", "half": "fp16", "fp16": "fp16",
    "float64": "fp64", "double": "fp64", "fp64": "fp64",
    "float8_e4m3fn": "fp8", "float8_e5m2": "fp8", "fp8": "fp8",
}


def canonical_dtype(dtype: object) -> str | None:
    """'torch.bfloat16', jnp.bfloat16, 'bf16' -> 'bf16'; None for a dtype the peak table does not know."""
    if dtype is None:
        return None
    text = str(getattr(dtype, "__name__", dtype)).lower().rsplit(".", 1)[-1].strip("<>'\" ")
    return DTYPE_ALIASES.get(text)


@dataclass(frozen=True)
class Work:
    """What one call of the benchmarked function does."""

    flops: float | None = None
    bytes: float | None = None  # bytes moved through device memory: inputs read once plus outputs written once
    items: float | None = None
    tokens: float | None = None
    dtype: str | None = None  # the arithmetic's dtype, for % of the datasheet's peak
    gpus: int = 1  # how many GPUs share the work: % of peak is against that many GPUs' peak

    def __post_init__(self) -> None:
        for name in ("flops", "bytes", "items", "tokens"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name}= must be >= 0, got {value}")
        if self.gpus < 1:
            raise ValueError(f"gpus= must be >= 1, got {self.gpus}")


def throughput_metrics(work: Work, median_s: float, target: Target) -> dict[str, float]:
    """Rates at the median time; ``pct_peak_*`` only where the target's datasheet peak is known."""
    if median_s <= 0:
        return {}
    metrics: dict[str, float] = {}
    gpu_type = target.gpu_type
    if work.flops is not None:
        metrics["tflops"] = work.flops / median_s / 1e12
        peak = gpu_type.peak_tflops_for(canonical_dtype(work.dtype)) if gpu_type else None
        if peak:
            metrics["pct_peak_tflops"] = 100 * metrics["tflops"] / (peak * work.gpus)
    if work.bytes is not None:
        metrics["gbps"] = work.bytes / median_s / 1e9
        if gpu_type and gpu_type.peak_bandwidth_gbps:
            metrics["pct_peak_gbps"] = 100 * metrics["gbps"] / (gpu_type.peak_bandwidth_gbps * work.gpus)
    if work.items is not None:
        metrics["items_per_s"] = work.items / median_s
    if work.tokens is not None:
        metrics["tokens_per_s"] = work.tokens / median_s
    return metrics
