"""Cells run by timer_accuracy.py through pytest: the gpubench fixture (cold and hot) and plain benchmark()."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("the timer-accuracy cells need a CUDA GPU", allow_module_level=True)

from accuracy_kernels import KERNELS, steady_state  # noqa: E402


@pytest.mark.parametrize("cache", ["cold", "hot"])
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_gpubench(gpubench, kernel, cache):
    fn = KERNELS[kernel]()
    steady_state(fn)
    gpubench(fn, cache=cache)


# max_time 0.25 s instead of 1 s: plain benchmark(fn) times the host's launches (µs) and so queues
# hundreds of thousands of 1.6 ms matmuls; what it reports does not depend on how many.
@pytest.mark.benchmark(max_time=0.25)
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_plain_pytest_benchmark(benchmark, kernel):
    benchmark(KERNELS[kernel]())
