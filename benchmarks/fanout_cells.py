"""GPU-bound cells for xdist_fanout.py: each runs a bf16 matmul for a fixed time. The fixture records the GPUs
each cell held and the one CUDA ran it on, so overlaps between workers can be checked from the saved JSON."""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("the fan-out cells need CUDA GPUs", allow_module_level=True)

CELLS = int(os.environ.get("FANOUT_CELLS", "32"))


@pytest.mark.parametrize("cell", range(CELLS))
def test_matmul_cell(gpubench, cell):
    n = 8192
    a = torch.randn(n, n, device=gpubench.device, dtype=torch.bfloat16)
    out = torch.empty_like(a)
    gpubench(torch.matmul, a, a, out=out, flops=2 * n**3, dtype="bf16")
