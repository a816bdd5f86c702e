"""Cells run by timer_accuracy.py through pytest: the gpubench fixture (cold and hot) and plain benchmark()."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("the timer-accuracy cells need a CUDA GPU", allow_module_level=True)

from accuracy_kernels import KERNELS  # noqa: E402


@pytest.mark.parametrize("cache", ["cold", "hot"])
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_gpubench(gpubench, kernel, cache):
    gpubench(KERNELS[kernel](), cache=cache)


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_plain_pytest_benchmark(benchmark, kernel):
    benchmark(KERNELS[kernel]())
