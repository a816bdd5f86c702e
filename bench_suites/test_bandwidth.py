"""Memory bandwidth: scale (out = 2·x: read n, write n) and add (out = x + y: read 2n, write n), in torch and
JAX: GB/s and % of the datasheet peak.

Bytes count each input read once and each output written once. On a GPU the buffers are 1 GiB, far past
L2; on the CPU 64 MiB, past the last-level cache of the machines CI runs on.
"""

from __future__ import annotations

import pytest

OPS = {"scale": (1, 1), "add": (2, 1)}  # (arrays read, arrays written)


def buffer_bytes(on_gpu: bool) -> int:
    return 2**30 if on_gpu else 64 * 2**20


@pytest.mark.parametrize("op", list(OPS))
def test_torch_bandwidth(gpubench, on_gpu, op):
    torch = pytest.importorskip("torch")
    numel = buffer_bytes(on_gpu) // 4
    x = torch.rand(numel, device=gpubench.device)
    y = torch.rand(numel, device=gpubench.device)
    out = torch.empty_like(x)
    if op == "scale":
        fn, expected = (lambda: torch.mul(x, 2.0, out=out)), x * 2.0
    else:
        fn, expected = (lambda: torch.add(x, y, out=out)), x + y
    fn()
    assert torch.equal(out, expected)
    reads, writes = OPS[op]
    gpubench(fn, bytes=(reads + writes) * numel * 4)


@pytest.mark.parametrize("op", list(OPS))
def test_jax_bandwidth(gpubench, on_gpu, op):
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp
    import numpy as np

    numel = buffer_bytes(on_gpu) // 4
    kx, ky = jax.random.split(jax.random.key(1))
    x = jax.random.uniform(kx, (numel,), dtype=jnp.float32)
    y = jax.random.uniform(ky, (numel,), dtype=jnp.float32)
    if op == "scale":
        fn, args, expected = jax.jit(lambda a: a * 2.0), (x,), np.asarray(x) * 2.0
    else:
        fn, args, expected = jax.jit(lambda a, b: a + b), (x, y), np.asarray(x) + np.asarray(y)
    np.testing.assert_array_equal(np.asarray(fn(*args)), expected)
    reads, writes = OPS[op]
    gpubench(fn, *args, bytes=(reads + writes) * numel * 4)
