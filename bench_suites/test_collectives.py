"""NCCL all-reduce across every GPU of the target (``--gpu H200:8``): algorithm and bus bandwidth, as nccl-tests
reports them.

One process drives all the target's GPUs through NCCL (``torch.cuda.nccl``, one communicator per device list).
A sample is nccl-tests' measurement: every GPU synchronised, ``iters`` all-reduces queued back to back, every GPU
synchronised again, on the host clock; the time per all-reduce is the sample over ``iters``. CUDA events on one
GPU would miss the others finishing later, so the host clock around a full synchronisation is the honest timer
for a collective. Bus bandwidth = algorithm bandwidth x 2(n-1)/n, the figure comparable across GPU counts.

The cells need a target of two or more GPUs; on the CPU and on one GPU they skip and say why.
"""

from __future__ import annotations

import math
import time

import pytest

SIZES = {"64MiB": 64 * 2**20, "1GiB": 2**30}
WARMUP_CALLS = 5
SAMPLES = 20
SAMPLE_S = 0.02  # each sample queues enough all-reduces to last about this long


def _sync(torch, devices: list[int]) -> None:
    for device in devices:
        torch.cuda.synchronize(device)


@pytest.mark.parametrize("size", list(SIZES))
def test_nccl_all_reduce(gpubench, gpubench_target, size):
    if gpubench_target.is_cpu or gpubench_target.count < 2:
        pytest.skip(f"an all-reduce needs a target of 2 or more GPUs (e.g. --gpu H200:8); {gpubench_target.id} "
                    f"has {0 if gpubench_target.is_cpu else gpubench_target.count}")
    torch = pytest.importorskip("torch")
    nccl = torch.cuda.nccl
    devices = list(range(gpubench_target.count))
    if torch.cuda.device_count() < len(devices):
        pytest.skip(f"{gpubench_target.id} needs {len(devices)} visible GPUs; torch sees {torch.cuda.device_count()}")
    numel = SIZES[size] // 4
    tensors = [torch.full((numel,), float(rank + 1), device=f"cuda:{rank}") for rank in devices]
    if not nccl.is_available(tensors):
        pytest.skip("torch was built without NCCL")

    def all_reduce() -> None:
        nccl.all_reduce(tensors)  # in place, summed over the GPUs

    all_reduce()
    _sync(torch, devices)
    n = len(devices)
    expected = n * (n + 1) / 2
    for tensor in tensors:  # a collective that returns wrong data has no bandwidth worth reporting
        assert torch.all(tensor == expected).item(), "NCCL all-reduce returned a wrong sum"
    for tensor in tensors:
        tensor.zero_()  # repeated in-place sums of ones would grow without bound; sums of zeros stay zero
    for _ in range(WARMUP_CALLS):
        all_reduce()
    _sync(torch, devices)
    start = time.perf_counter()
    all_reduce()
    _sync(torch, devices)
    iters = max(1, math.ceil(SAMPLE_S / (time.perf_counter() - start)))

    samples = []
    for _ in range(SAMPLES):
        _sync(torch, devices)
        start = time.perf_counter()
        for _ in range(iters):
            all_reduce()
        _sync(torch, devices)
        samples.append(time.perf_counter() - start)
    per_call = sorted(samples)[len(samples) // 2] / iters
    algbw = SIZES[size] / per_call / 1e9
    gpubench.extra_info["devices"] = [str(torch.cuda.get_device_properties(d).uuid) for d in devices]
    # no bytes=: the HBM bandwidth peak is not the yardstick of a collective; algbw and busbw are
    gpubench.record(samples, loops=iters, timer="host_sync_all_gpus",
                    metrics={"algbw_gbps": algbw, "busbw_gbps": algbw * 2 * (n - 1) / n, "ranks": n})
