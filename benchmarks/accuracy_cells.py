"""Cells run by timer_accuracy.py through pytest: the gpubench fixture (cold and hot) and plain benchmark()."""

from __future__ import annotations

import os
import time

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("the timer-accuracy cells need a CUDA GPU", allow_module_level=True)

from accuracy_kernels import KERNELS, steady_state  # noqa: E402


@pytest.mark.parametrize("cache", ["cold", "hot"])
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_gpubench(gpubench, kernel, cache):
    fn = KERNELS[kernel]()
    if os.environ.get("GPUBENCH_ACCURACY_FROM_REST"):
        # the fixture's own warm-up must bring the kernel to the state the references measured, from a rested
        # GPU: a power-limited kernel runs faster after an idle second (docs/RESULTS.md, section 9)
        fn()
        torch.cuda.synchronize()
        time.sleep(1.0)
    else:
        steady_state(fn)
    gpubench(fn, cache=cache)


# max_time 0.25 s instead of 1 s: plain benchmark(fn) times the host's launches (µs) and so queues
# hundreds of thousands of 1.6 ms matmuls; what it reports does not depend on how many.
@pytest.mark.benchmark(max_time=0.25)
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_plain_pytest_benchmark(benchmark, kernel):
    benchmark(KERNELS[kernel]())
