"""Collectives as nccl-tests measures them: each op's message size, what every rank's buffers hold and must hold
after the op, the timing of a batch of calls, algorithm and bus bandwidth, and the link peak bus bandwidth is
compared with.

**Size** is nccl-tests' ``size`` column (``max(sendBytes, recvBytes)`` in its ``common.cu``; "S, the size in bytes
of the total array" in its doc/PERFORMANCE.md):

- all-reduce: each rank's buffer; input and output are S bytes each;
- all-gather: each rank's output; each rank contributes one chunk of S/n, and every rank receives all n;
- reduce-scatter: each rank's input, n chunks of S/n; rank k receives the sum of every rank's chunk k.

As in nccl-tests, a chunk is rounded down to a multiple of 16 bytes, so S is exact for power-of-two sizes over
2, 4 or 8 ranks. The largest buffers a rank holds are 2 S (all-reduce, out of place) and S + S/n (the others).

**Bandwidth** (nccl-tests' doc/PERFORMANCE.md): algbw = S / t; busbw = algbw x 2(n-1)/n for an all-reduce and
x (n-1)/n for an all-gather or a reduce-scatter: the bytes each rank must send (and receive) per byte of S, so
busbw is comparable across rank counts and with one GPU's link bandwidth in one direction.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .hardware import Target

Op = Literal["all_reduce", "all_gather", "reduce_scatter"]
OPS: tuple[Op, ...] = ("all_reduce", "all_gather", "reduce_scatter")
CHUNK_ALIGN_BYTES = 16  # nccl-tests rounds each rank's chunk down to this
MAX_BATCH = 1 << 16  # a call too quick for the clock to see stops the warm-up's doubling here


@dataclass(frozen=True)
class Message:
    """One collective call's buffers. A rank's input is ``input_rows`` chunks of ``chunk_elems`` elements, its
    output ``output_rows`` chunks: all-reduce 1 and 1 (the chunk is the whole buffer), all-gather 1 and n,
    reduce-scatter n and 1."""

    op: Op
    ranks: int
    elem_bytes: int
    chunk_elems: int

    @property
    def input_rows(self) -> int:
        return self.ranks if self.op == "reduce_scatter" else 1

    @property
    def output_rows(self) -> int:
        return self.ranks if self.op == "all_gather" else 1

    @property
    def input_elems(self) -> int:
        return self.input_rows * self.chunk_elems

    @property
    def output_elems(self) -> int:
        return self.output_rows * self.chunk_elems

    @property
    def size_bytes(self) -> int:
        """nccl-tests' size S: the larger of a rank's two buffers."""
        return max(self.input_elems, self.output_elems) * self.elem_bytes

    @property
    def bytes_per_rank(self) -> int:
        """Device memory one rank's buffers take (out of place: input and output apart)."""
        return (self.input_elems + self.output_elems) * self.elem_bytes

    def input_values(self, rank: int) -> tuple[float, ...]:
        """The value each chunk of ``rank``'s input is filled with. Every rank's and every chunk's differ, so a
        chunk that lands in the wrong place, comes from the wrong rank or is summed twice reads wrong."""
        if self.op == "reduce_scatter":
            return tuple(float((rank + 1) * (row + 1)) for row in range(self.ranks))
        return (float(rank + 1),)

    def expected_values(self, rank: int) -> tuple[float, ...]:
        """What each chunk of ``rank``'s output must hold after the op, from ``input_values``. The sums are small
        integers, exact in every float type, so the check is equality."""
        rank_sum = self.ranks * (self.ranks + 1) // 2  # sum over ranks r of (r + 1)
        if self.op == "all_reduce":
            return (float(rank_sum),)
        if self.op == "all_gather":
            return tuple(float(row + 1) for row in range(self.ranks))
        return (float((rank + 1) * rank_sum),)


def message(op: Op, size_bytes: int, ranks: int, elem_bytes: int = 4) -> Message:
    """The buffers nccl-tests uses for ``op`` at ``size_bytes`` (its -b/-e size) over ``ranks`` ranks."""
    if op not in OPS:
        raise ValueError(f"op={op!r}; use one of {', '.join(OPS)}")
    if ranks < 1:
        raise ValueError(f"ranks={ranks}; a collective needs at least one rank")
    count = size_bytes // elem_bytes
    if op == "all_reduce":
        chunk = count
    else:
        align = max(1, CHUNK_ALIGN_BYTES // elem_bytes)
        chunk = count // ranks // align * align
    if chunk < 1:
        raise ValueError(f"{size_bytes} bytes over {ranks} ranks leaves no whole {CHUNK_ALIGN_BYTES}-byte chunk per rank")
    return Message(op, ranks, elem_bytes, chunk)


def bus_factor(op: Op, ranks: int) -> float:
    """nccl-tests' correction from algorithm to bus bandwidth."""
    if op == "all_reduce":
        return 2 * (ranks - 1) / ranks
    return (ranks - 1) / ranks


def algbw_gbps(size_bytes: float, seconds: float) -> float:
    return size_bytes / seconds / 1e9


def busbw_gbps(op: Op, size_bytes: float, seconds: float, ranks: int) -> float:
    return algbw_gbps(size_bytes, seconds) * bus_factor(op, ranks)


def link_peak_gbps(target: Target) -> float | None:
    """The figure busbw is compared with: one GPU's NVLink bandwidth in one direction, from the catalog. nccl-tests'
    busbw models each rank sending and receiving at once over links of bandwidth B, so B is a one-way figure:
    half the datasheet's NVLink total (H100/H200 SXM 900 GB/s -> 450, A100 SXM 600 -> 300). None for the CPU and
    for GPUs without NVLink, whose traffic goes over PCIe at a rate the catalog cannot know."""
    if target.gpu_type is None:
        return None
    return target.gpu_type.nvlink_per_direction_gbps


def bandwidth_metrics(msg: Message, seconds_per_call: float, link_peak: float | None) -> dict[str, float]:
    """The figures a collective cell records, under the metric registry's keys."""
    busbw = busbw_gbps(msg.op, msg.size_bytes, seconds_per_call, msg.ranks)
    figures = {
        "algbw_gbps": algbw_gbps(msg.size_bytes, seconds_per_call),
        "busbw_gbps": busbw,
        "ranks": float(msg.ranks),
        "size_bytes": float(msg.size_bytes),
    }
    if link_peak:
        figures["link_peak_gbps"] = link_peak
        figures["pct_peak_link"] = 100 * busbw / link_peak
    return figures


# --- buffers: fill, poison, check (tensors of any library with view/fill_/==; torch on the GPU, on the CPU in tests)


def fill_input(msg: Message, rank: int, tensor: Any) -> None:
    rows = tensor.view(msg.input_rows, msg.chunk_elems)
    for row, value in enumerate(msg.input_values(rank)):
        rows[row].fill_(value)


def fill_inputs(msg: Message, inputs: Sequence[Any]) -> None:
    """Every rank's input, one tensor a rank in rank order (one process driving all the GPUs)."""
    for rank, tensor in enumerate(inputs):
        fill_input(msg, rank, tensor)


def poison_outputs(outputs: Sequence[Any]) -> None:
    """NaN equals nothing, so an op that leaves an output unwritten fails the check rather than passing on what a
    previous call left there."""
    for tensor in outputs:
        tensor.fill_(math.nan)


def wrong_chunks(msg: Message, rank: int, output: Any) -> list[str]:
    """Each chunk of ``rank``'s output that does not hold what the op must leave there, described; [] when all
    are right."""
    problems = []
    rows = output.view(msg.output_rows, msg.chunk_elems)
    for row, value in enumerate(msg.expected_values(rank)):
        chunk = rows[row]
        wrong = chunk != value
        if bool(wrong.any()):
            found = chunk[wrong][0].item()
            problems.append(f"rank {rank} chunk {row}: {int(wrong.sum())} of {msg.chunk_elems} elements wrong "
                            f"(expected {value:g}, found {found:g})")
    return problems


def wrong_outputs(msg: Message, outputs: Sequence[Any]) -> list[str]:
    """``wrong_chunks`` over every rank's output, one tensor a rank in rank order."""
    return [problem for rank, output in enumerate(outputs) for problem in wrong_chunks(msg, rank, output)]


# --- timing --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    samples_s: tuple[float, ...]  # each the host time of calls_per_sample back-to-back calls
    calls_per_sample: int
    warmup_calls: int
    warmup_s: float

    @property
    def median_per_call_s(self) -> float:
        return statistics.median(self.samples_s) / self.calls_per_sample


def time_collective(call: Callable[[], object], sync: Callable[[], object], *, samples: int, sample_s: float,
                    warmup_s: float, clock: Callable[[], float] = time.perf_counter) -> Timing:
    """nccl-tests' timing: every GPU synchronised, a batch of calls queued back to back, every GPU synchronised
    again, on the host clock. CUDA events on one GPU would miss the others finishing later.

    Warm-up runs for ``warmup_s`` in batches that double until one lasts an eighth of ``sample_s`` (a first
    call, or a batch of one tiny call, is mostly synchronisation and would overstate the time per call); the
    last batch sets how many calls make a sample of about ``sample_s``, so a 1 MiB message is timed over
    hundreds of calls and a 1 GiB one over a few.
    """
    batch, warmup_calls = 1, 0
    warm_start = clock()
    while True:
        sync()
        start = clock()
        for _ in range(batch):
            call()
        sync()
        took = clock() - start
        warmup_calls += batch
        if took < sample_s / 8 and batch < MAX_BATCH:
            batch *= 2
        elif clock() - warm_start >= warmup_s:
            break
    warmed_s = clock() - warm_start
    per_call = took / batch
    calls_per_sample = max(1, math.ceil(sample_s / per_call)) if per_call > 0 else batch
    totals = []
    for _ in range(samples):
        sync()
        start = clock()
        for _ in range(calls_per_sample):
            call()
        sync()
        totals.append(clock() - start)
    return Timing(tuple(totals), calls_per_sample, warmup_calls, warmed_s)
