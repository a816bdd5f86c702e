"""NCCL all-reduce, all-gather and reduce-scatter across every GPU of the target (``--gpu H200:4``), 1 MiB to 1 GiB:
algorithm bandwidth, bus bandwidth and bus bandwidth as a share of the GPU's NVLink peak, as nccl-tests reports
them (pytest_gpubench/collectives.py has the definitions of size, algbw, busbw and the peak).

One process drives all the target's GPUs through NCCL (``torch.cuda.nccl``, one communicator per device list),
out of place, fp32 (nccl-tests' defaults: its first, out-of-place columns). Each cell first checks that the op
leaves every chunk of every rank's output as it must, and checks again after timing; a collective that returns
wrong data fails its cell and reports no bandwidth. A sample is nccl-tests' measurement: every GPU synchronised,
a batch of calls queued back to back, every GPU synchronised again, on the host clock; batches are sized so a
sample lasts about 20 ms, so small messages are timed over hundreds of calls. Each call goes through one Python
call that launches n kernels, so at 1 MiB the figure includes that launch path, as nccl-tests' without CUDA graphs
includes its own.

Run NCCL with NCCL_NVLS_ENABLE=0 to compare with the link peak: NVLink SHARP reduces in the switch, and its
all-reduce busbw is not bounded by one GPU's link. The cells record the NCCL_* variables they ran under.

The cells need a target of two or more GPUs; on the CPU and on one GPU they skip and say why, before importing torch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pytest

from pytest_gpubench.collectives import (
    Message,
    Op,
    bandwidth_metrics,
    fill_inputs,
    link_peak_gbps,
    message,
    poison_outputs,
    time_collective,
    wrong_outputs,
)
from pytest_gpubench.fixture import GpuBench
from pytest_gpubench.hardware import Target

MIB = 2**20
# the ids keep "64MiB" and "1GiB" as the first all-reduce cells named them, so saved runs still compare
SIZES = {"1MiB": MIB, "4MiB": 4 * MIB, "16MiB": 16 * MIB, "64MiB": 64 * MIB, "256MiB": 256 * MIB, "1GiB": 1024 * MIB}
SAMPLES = 20
SAMPLE_S = 0.02
WARMUP_S = 0.1  # per cell, after the first (checked) call; NCCL's first call of a size sets up its buffers
_NAMED = {"all_reduce": "an all-reduce", "all_gather": "an all-gather", "reduce_scatter": "a reduce-scatter"}


@pytest.mark.parametrize("size", list(SIZES))
def test_nccl_all_reduce(gpubench: GpuBench, gpubench_target: Target, size: str) -> None:
    _bench_collective(gpubench, gpubench_target, "all_reduce", SIZES[size])


@pytest.mark.parametrize("size", list(SIZES))
def test_nccl_all_gather(gpubench: GpuBench, gpubench_target: Target, size: str) -> None:
    _bench_collective(gpubench, gpubench_target, "all_gather", SIZES[size])


@pytest.mark.parametrize("size", list(SIZES))
def test_nccl_reduce_scatter(gpubench: GpuBench, gpubench_target: Target, size: str) -> None:
    _bench_collective(gpubench, gpubench_target, "reduce_scatter", SIZES[size])


def _bench_collective(gpubench: GpuBench, target: Target, op: Op, size_bytes: int) -> None:
    ranks = 0 if target.is_cpu else target.count
    if ranks < 2:
        pytest.skip(f"{_NAMED[op]} needs a target of 2 or more GPUs (e.g. --gpu H200:8); {target.id} has {ranks}")
    torch = pytest.importorskip("torch")
    nccl = torch.cuda.nccl
    devices = list(range(ranks))
    if torch.cuda.device_count() < ranks:
        pytest.skip(f"{target.id} needs {ranks} visible GPUs; torch sees {torch.cuda.device_count()}")
    msg = message(op, size_bytes, ranks, elem_bytes=4)
    inputs = [torch.empty(msg.input_elems, dtype=torch.float32, device=f"cuda:{d}") for d in devices]
    outputs = [torch.empty(msg.output_elems, dtype=torch.float32, device=f"cuda:{d}") for d in devices]
    if not nccl.is_available(inputs):  # one tensor a device: it refuses a list naming a device twice
        pytest.skip("torch was built without NCCL")
    run = {"all_reduce": nccl.all_reduce, "all_gather": nccl.all_gather, "reduce_scatter": nccl.reduce_scatter}[op]

    def call() -> None:
        run(inputs, outputs)  # out of place; all-reduce and reduce-scatter sum

    def sync() -> None:
        for device in devices:
            torch.cuda.synchronize(device)

    fill_inputs(msg, inputs)
    poison_outputs(outputs)
    sync()
    call()  # also creates the communicator, untimed
    sync()
    _fail_if_wrong(msg, outputs, "before timing")
    timing = time_collective(call, sync, samples=SAMPLES, sample_s=SAMPLE_S, warmup_s=WARMUP_S)
    _fail_if_wrong(msg, outputs, "after timing")  # every timed call rewrote the outputs from unchanged inputs

    gpubench.extra_info.update(
        op=op,
        dtype="fp32",
        bytes_per_gpu=msg.bytes_per_rank,
        warmup_calls=timing.warmup_calls,
        warmup_s=timing.warmup_s,
        devices=[str(torch.cuda.get_device_properties(d).uuid) for d in devices],
        nccl_version=".".join(str(part) for part in nccl.version()),
        nccl_env={name: value for name, value in sorted(os.environ.items()) if name.startswith("NCCL_")},
    )
    # no bytes=: the HBM bandwidth peak is not the yardstick of a collective; busbw against the link peak is
    gpubench.record(timing.samples_s, loops=timing.calls_per_sample, timer="host_sync_all_gpus",
                    metrics=bandwidth_metrics(msg, timing.median_per_call_s, link_peak_gbps(target)))


def _fail_if_wrong(msg: Message, outputs: Sequence[Any], when: str) -> None:
    problems = wrong_outputs(msg, outputs)
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        pytest.fail(f"NCCL {msg.op} over {msg.ranks} GPUs returned wrong data {when}, so it has no bandwidth to "
                    f"report: {shown}", pytrace=False)
