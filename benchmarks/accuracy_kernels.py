"""The three kernels of the timer-accuracy check, each on random data, with preallocated outputs."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

STEADY_S = 1.0


def steady_state(fn: Callable[[], object], seconds: float = STEADY_S) -> None:
    """Run fn back to back for a while before any method times it. A power-limited kernel (the bf16 matmul)
    runs 3-5 % faster after an idle spell than after seconds of load, so every method gets the same history."""
    torch.cuda.synchronize()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(10):
            fn()
        torch.cuda.synchronize()


def matmul_bf16_8192() -> Callable[[], object]:
    n = 8192
    g = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16, generator=g)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16, generator=g)
    out = torch.empty(n, n, device="cuda", dtype=torch.bfloat16)
    return lambda: torch.matmul(a, b, out=out)


def _add(numel: int) -> Callable[[], object]:
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.rand(numel, device="cuda", generator=g)
    y = torch.rand(numel, device="cuda", generator=g)
    out = torch.empty_like(x)
    return lambda: torch.add(x, y, out=out)


def add_fp32_256mb() -> Callable[[], object]:
    return _add(256 * 2**20 // 4)  # each of the three tensors is 256 MB


def add_fp32_16() -> Callable[[], object]:
    return _add(16)


KERNELS: dict[str, Callable[[], Callable[[], object]]] = {
    "matmul_bf16_8192": matmul_bf16_8192,
    "add_fp32_256MB": add_fp32_256mb,
    "add_fp32_16": add_fp32_16,
}
