"""Cells for gate_aa.py: one suite per target kind, and a switch that gives one cell 10 % (or any) more work.

GATE_SLOWDOWN=1.1 makes ``test_add`` (bandwidth-bound: its time grows with its bytes) and ``test_python_loop``
(CPU only) do 1.1 times the work. Not the matrix product: a K that is not a multiple of the tensor cores'
tile leaves the fast path (measured: K = 4505 instead of 4096 took 5.9 times as long on an H200).
"""

from __future__ import annotations

import os

import pytest

SLOWDOWN = float(os.environ.get("GATE_SLOWDOWN", "1"))


def test_matmul(gpubench, on_gpu):
    torch = pytest.importorskip("torch")
    n = k = 4096 if on_gpu else 192
    dtype = torch.bfloat16 if on_gpu else torch.float32
    a = torch.randn(n, k, device=gpubench.device, dtype=dtype)
    b = torch.randn(k, n, device=gpubench.device, dtype=dtype)
    gpubench(torch.matmul, a, b, flops=2 * n * n * k, dtype="bf16" if on_gpu else "fp32")


def test_add(gpubench, on_gpu):
    torch = pytest.importorskip("torch")
    elements = int((64 * 2**20 if on_gpu else 2**20) * SLOWDOWN)  # 256 MiB of fp32 on a GPU
    x = torch.randn(elements, device=gpubench.device)
    y = torch.randn(elements, device=gpubench.device)
    out = torch.empty_like(x)
    gpubench(torch.add, x, y, out=out, bytes=3 * 4 * elements)


def test_small_kernel(gpubench):
    torch = pytest.importorskip("torch")
    x = torch.randn(16, device=gpubench.device)
    gpubench(torch.add, x, x)


def python_loop(n):
    total = 0
    for i in range(n):
        total += i * i
    return total


def test_python_loop(gpubench, on_gpu):
    if on_gpu:
        pytest.skip("the CPU suite's cell")
    gpubench(python_loop, int(20000 * SLOWDOWN))
