"""Dense matrix product C = A·B, square, in torch and JAX: TFLOP/s and % of the datasheet peak.

2·n³ floating-point operations a call. On a GPU n = 8192 fills the chip; on the CPU n is small so the
suite stays quick. fp32 is true fp32 in both frameworks (no TF32), so it is held against the fp32 peak.
"""

from __future__ import annotations

import pytest

DTYPES = ["fp32", "bf16", "fp16"]


def matrix_size(on_gpu: bool, dtype: str) -> int:
    if on_gpu:
        return 8192
    return 512 if dtype == "fp32" else 256  # CPUs emulate half types slowly


@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_matmul(gpubench, on_gpu, dtype):
    torch = pytest.importorskip("torch")
    torch.backends.cuda.matmul.allow_tf32 = False
    n = matrix_size(on_gpu, dtype)
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    generator = torch.Generator(device=gpubench.device).manual_seed(0)
    a = torch.randn(n, n, device=gpubench.device, dtype=torch_dtype, generator=generator)
    b = torch.randn(n, n, device=gpubench.device, dtype=torch_dtype, generator=generator)
    out = torch.empty(n, n, device=gpubench.device, dtype=torch_dtype)
    expected = a.double() @ b.double()
    torch.matmul(a, b, out=out)
    relative_error = ((out.double() - expected).norm() / expected.norm()).item()
    assert relative_error < (1e-4 if dtype == "fp32" else 1e-2)
    gpubench(torch.matmul, a, b, out=out, flops=2 * n**3, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_jax_matmul(gpubench, on_gpu, dtype):
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp
    import numpy as np

    n = matrix_size(on_gpu, dtype)
    jax_dtype = {"fp32": jnp.float32, "bf16": jnp.bfloat16, "fp16": jnp.float16}[dtype]
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), dtype=jax_dtype)
    b = jax.random.normal(kb, (n, n), dtype=jax_dtype)
    matmul = jax.jit(lambda x, y: jnp.matmul(x, y, precision=jax.lax.Precision.HIGHEST))
    # checked on a band of rows: the whole 8192³ product in float64 on the host's CPU took seconds a cell, more
    # than the measurement; every row depends on all of b, so a wrong kernel shows in any band
    rows = min(n, 256)
    expected = np.asarray(a[:rows], dtype=np.float64) @ np.asarray(b, dtype=np.float64)
    got = np.asarray(matmul(a, b)[:rows], dtype=np.float64)
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < (1e-4 if dtype == "fp32" else 1e-2)
    gpubench(matmul, a, b, flops=2 * n**3, dtype=dtype)
