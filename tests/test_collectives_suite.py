"""The collectives suite (bench_suites/test_collectives.py) and the nccl-tests definitions it measures by
(pytest_gpubench/collectives.py): the cells' ids, what a user sees where the cells cannot run, each op's size,
algorithm and bus bandwidth, the link peak busbw is held against, the check of each op's result, and the timing.
All on the CPU: the GPU run is tests/test_gpu.py's."""

from __future__ import annotations

import importlib.util

import math
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from pytest_gpubench.collectives import (
    OPS,
    Message,
    Op,
    algbw_gbps,
    bandwidth_metrics,
    bus_factor,
    busbw_gbps,
    fill_inputs,
    link_peak_gbps,
    message,
    poison_outputs,
    time_collective,
    wrong_outputs,
)
from pytest_gpubench.hardware import CPU_TARGET, Catalog, GpuType, Target
from pytest_gpubench.metrics import metric

REPO = Path(__file__).resolve().parent.parent
SUITE = REPO / "bench_suites" / "test_collectives.py"
SIZE_IDS = ("1MiB", "4MiB", "16MiB", "64MiB", "256MiB", "1GiB")
GIB = 2**30
CATALOG = Catalog()


# --- the suite as a user runs it -----------------------------------------------------------------


def test_the_cells_are_every_op_at_every_size_on_every_target(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(str(SUITE), "--gpu=H200:2,H200:4", "--collect-only", "-q",
                                           "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK
    ids = [line.split("::", 1)[1] for line in result.outlines if "test_collectives.py::" in line]
    assert sorted(ids) == sorted(f"test_nccl_{op}[{size}-{target}]"
                                 for op in OPS for size in SIZE_IDS for target in ("H200:2", "H200:4"))


def test_on_the_cpu_every_cell_skips_at_once_saying_it_needs_two_gpus(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(str(SUITE), "--gpu=cpu", "-rs", "-p", "no:cacheprovider",
                                           "--junitxml=junit.xml")
    result.assert_outcomes(skipped=18)
    result.stdout.fnmatch_lines_random([
        "SKIPPED [[]6[]] *: an all-reduce needs a target of 2 or more GPUs (e.g. --gpu H200:8); cpu has 0",
        "SKIPPED [[]6[]] *: an all-gather needs a target of 2 or more GPUs (e.g. --gpu H200:8); cpu has 0",
        "SKIPPED [[]6[]] *: a reduce-scatter needs a target of 2 or more GPUs (e.g. --gpu H200:8); cpu has 0",
    ])
    # the skip comes before torch is imported (1.7 s on this 2-core machine): milliseconds for all 18 cells
    seconds = [float(case.get("time", "nan")) for case in ET.parse(pytester.path / "junit.xml").iter("testcase")]
    assert len(seconds) == 18 and sum(seconds) < 1.0, seconds


def test_on_one_gpu_the_cells_skip_and_where_torch_sees_too_few_gpus_they_say_so(
    pytester: pytest.Pytester, host_with_two_h200: None
) -> None:
    # nvidia-smi (a fake here) shows two H200s; this CPU build of torch sees none, as a broken driver would
    result = pytester.runpytest_subprocess(str(SUITE), "--gpu=H200:1,H200:2", "-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=36)
    # where torch is not installed at all (CI's oldest-versions run), the two-GPU cells say that instead
    two_gpus = ("H200:2 needs 2 visible GPUs; torch sees 0" if importlib.util.find_spec("torch") is not None
                else "could not import 'torch': No module named 'torch'")
    result.stdout.fnmatch_lines_random([
        "SKIPPED [[]6[]] *: an all-reduce needs a target of 2 or more GPUs (e.g. --gpu H200:8); H200:1 has 1",
        "SKIPPED [[]6[]] *: a reduce-scatter needs a target of 2 or more GPUs (e.g. --gpu H200:8); H200:1 has 1",
        f"SKIPPED [[]18[]] *: {two_gpus}",
    ])


# --- sizes: nccl-tests' "size" column ------------------------------------------------------------


@pytest.mark.parametrize("ranks", [2, 4, 8])
def test_a_size_is_the_whole_array_as_nccl_tests_counts_it(ranks: int) -> None:
    elems = GIB // 4
    reduce = message("all_reduce", GIB, ranks)
    assert (reduce.input_elems, reduce.output_elems, reduce.size_bytes) == (elems, elems, GIB)
    gather = message("all_gather", GIB, ranks)  # each rank sends S/n and receives S
    assert (gather.input_elems, gather.output_elems, gather.size_bytes) == (elems // ranks, elems, GIB)
    scatter = message("reduce_scatter", GIB, ranks)  # each rank sends S and receives S/n
    assert (scatter.input_elems, scatter.output_elems, scatter.size_bytes) == (elems, elems // ranks, GIB)
    # what a GPU holds: out of place, 2 GiB for the all-reduce, 1 GiB + 1/n GiB for the others
    assert reduce.bytes_per_rank == 2 * GIB
    assert gather.bytes_per_rank == scatter.bytes_per_rank == GIB + GIB // ranks


def test_a_chunk_is_rounded_down_to_16_bytes_as_nccl_tests_does() -> None:
    gather = message("all_gather", 2**20, 3)  # nccl-tests: base = (count/nranks) & ~(16/eltSize - 1)
    assert gather.chunk_elems == (2**18 // 3) & ~3 == 87380
    assert gather.size_bytes == 87380 * 3 * 4
    assert message("all_reduce", 2**20 + 4, 3).size_bytes == 2**20 + 4  # an all-reduce has no chunks
    with pytest.raises(ValueError, match="no whole 16-byte chunk"):
        message("reduce_scatter", 16, 2)
    with pytest.raises(ValueError, match="use one of all_reduce, all_gather, reduce_scatter"):
        message("broadcast", GIB, 2)  # type: ignore[arg-type]


# --- bandwidth -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("op", "ranks", "factor"), [
    ("all_reduce", 2, 1.0), ("all_reduce", 4, 1.5), ("all_reduce", 8, 1.75),
    ("all_gather", 2, 0.5), ("all_gather", 4, 0.75), ("all_gather", 8, 0.875),
    ("reduce_scatter", 2, 0.5), ("reduce_scatter", 4, 0.75), ("reduce_scatter", 8, 0.875),
])
def test_bus_bandwidth_uses_nccl_tests_factors(op: Op, ranks: int, factor: float) -> None:
    assert bus_factor(op, ranks) == pytest.approx(factor)
    assert busbw_gbps(op, 1e9, 0.5, ranks) == pytest.approx(2.0 * factor)


def test_the_saved_h200x4_all_reduce_reads_as_docs_results_reports_it() -> None:
    # docs/RESULTS.md section 2: 1 GiB all-reduce over 4 H200s, 4.541 ms -> algbw 236 GB/s, busbw 355 GB/s
    assert algbw_gbps(GIB, 4.541e-3) == pytest.approx(236.5, abs=0.05)
    figures = bandwidth_metrics(message("all_reduce", GIB, 4), 4.541e-3, 450.0)
    assert figures["busbw_gbps"] == pytest.approx(354.7, abs=0.05)
    assert figures["pct_peak_link"] == pytest.approx(100 * figures["busbw_gbps"] / 450)  # 78.8 %
    assert (figures["ranks"], figures["size_bytes"], figures["link_peak_gbps"]) == (4, GIB, 450)


def test_without_a_link_peak_no_share_of_it_is_reported() -> None:
    figures = bandwidth_metrics(message("all_gather", GIB, 2), 1e-3, None)
    assert set(figures) == {"algbw_gbps", "busbw_gbps", "ranks", "size_bytes"}


def test_every_figure_a_collective_cell_records_is_in_the_metric_registry() -> None:
    keys = set(bandwidth_metrics(message("reduce_scatter", GIB, 4), 1e-3, 450.0))
    assert [key for key in keys if metric(key) is None] == []
    assert {metric(key).kind for key in keys} == {"collective"}  # type: ignore[union-attr]


# --- the link peak busbw is held against ---------------------------------------------------------


@pytest.mark.parametrize(("name", "per_direction"), [
    ("H200", 450.0), ("H100", 450.0),   # NVLink 4: 900 GB/s both directions together
    ("A100", 300.0), ("A100-80GB", 300.0),  # NVLink 3: 600 GB/s
    ("B200", 900.0),  # NVLink 5: 1.8 TB/s
    ("L40S", None), ("L4", None), ("T4", None), ("A10G", None),  # PCIe only
])
def test_the_link_peak_is_one_direction_of_the_catalogs_nvlink_figure(name: str, per_direction: float | None) -> None:
    gpu_type = CATALOG.lookup(name)
    assert gpu_type.nvlink_per_direction_gbps == per_direction
    assert link_peak_gbps(Target(gpu_type, 4)) == per_direction
    if per_direction is not None:
        assert gpu_type.nvlink_gbps == 2 * per_direction


def test_no_link_peak_for_the_cpu_a_gpu_the_catalog_lacks_or_lost_by_a_price_override() -> None:
    assert link_peak_gbps(CPU_TARGET) is None
    assert link_peak_gbps(Target(GpuType("RTX-PRO-6000", 96, None), 2)) is None
    assert CATALOG.with_prices({"H200": 1.0}).lookup("H200").nvlink_per_direction_gbps == 450


# --- the result check ----------------------------------------------------------------------------


def _reference(op: Op, inputs: list[Any], outputs: list[Any]) -> None:
    """Each op's definition on CPU tensors, one a rank: what NCCL must compute."""
    torch = pytest.importorskip("torch")
    total = torch.stack(inputs).sum(0)
    for rank, output in enumerate(outputs):
        if op == "all_reduce":
            output.copy_(total)
        elif op == "all_gather":
            output.copy_(torch.cat(inputs))
        else:
            output.copy_(total.view(len(inputs), -1)[rank])


def _buffers(op: Op, ranks: int) -> tuple[Message, list[Any], list[Any]]:
    torch = pytest.importorskip("torch")
    msg = message(op, 4096, ranks)
    inputs = [torch.empty(msg.input_elems) for _ in range(ranks)]
    outputs = [torch.empty(msg.output_elems) for _ in range(ranks)]
    fill_inputs(msg, inputs)
    poison_outputs(outputs)
    return msg, inputs, outputs


@pytest.mark.parametrize("ranks", [2, 3, 4, 8])
@pytest.mark.parametrize("op", OPS)
def test_what_each_op_must_compute_passes_the_check(op: Op, ranks: int) -> None:
    msg, inputs, outputs = _buffers(op, ranks)
    _reference(op, inputs, outputs)
    assert wrong_outputs(msg, outputs) == []


@pytest.mark.parametrize("op", OPS)
def test_an_op_that_writes_nothing_fails_the_check(op: Op) -> None:
    msg, _, outputs = _buffers(op, 4)
    problems = wrong_outputs(msg, outputs)
    assert len(problems) == 4 * msg.output_rows and all("found nan" in p for p in problems)


def test_chunks_gathered_in_the_wrong_rank_order_fail_the_check() -> None:
    torch = pytest.importorskip("torch")
    msg, inputs, outputs = _buffers("all_gather", 4)
    for output in outputs:
        output.copy_(torch.cat(inputs[::-1]))
    assert wrong_outputs(msg, outputs)[0] == (f"rank 0 chunk 0: {msg.chunk_elems} of {msg.chunk_elems} elements wrong "
                                              "(expected 1, found 4)")


def test_every_rank_given_the_first_chunk_of_a_reduce_scatter_fails_the_check() -> None:
    msg, inputs, outputs = _buffers("reduce_scatter", 4)
    total = (inputs[0] + inputs[1] + inputs[2] + inputs[3]).view(4, -1)
    for output in outputs:
        output.copy_(total[0])
    assert [p.split(":")[0] for p in wrong_outputs(msg, outputs)] == ["rank 1 chunk 0", "rank 2 chunk 0",
                                                                      "rank 3 chunk 0"]


def test_an_all_reduce_that_misses_a_rank_or_one_element_fails_the_check() -> None:
    msg, inputs, outputs = _buffers("all_reduce", 4)
    for output in outputs:
        output.copy_(inputs[0] + inputs[1] + inputs[2])  # rank 3's data never arrived
    assert len(wrong_outputs(msg, outputs)) == 4
    _reference("all_reduce", inputs, outputs)
    outputs[2][17] = 0.0
    assert wrong_outputs(msg, outputs) == [f"rank 2 chunk 0: 1 of {msg.chunk_elems} elements wrong "
                                           "(expected 10, found 0)"]


_GLOO_RANKS = """
import multiprocessing, sys
import torch
import torch.distributed as dist
from pytest_gpubench.collectives import OPS, message, fill_input, poison_outputs, wrong_chunks

# torch 2.13 names these *_single and warns on the older names, which older releases have alone
all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor

def rank_main(rank, world, store, queue):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    problems = []
    for op in OPS:
        msg = message(op, 4096, world)
        inp, out = torch.empty(msg.input_elems), torch.empty(msg.output_elems)
        fill_input(msg, rank, inp)
        poison_outputs([out])
        if op == "all_reduce":
            out.copy_(inp)
            dist.all_reduce(out)
        elif op == "all_gather":
            all_gather(out, inp)
        else:
            reduce_scatter(out, inp)
        problems += [f"{op} over {world}: {p}" for p in wrong_chunks(msg, rank, out)]
    dist.destroy_process_group()
    queue.put(problems)

if __name__ == "__main__":
    context = multiprocessing.get_context("fork")  # torch is imported once, before any op runs
    for world in (2, 3):
        queue = context.Queue()
        store = f"{sys.argv[1]}/store{world}"
        ranks = [context.Process(target=rank_main, args=(r, world, store, queue)) for r in range(world)]
        for process in ranks:
            process.start()
        for _ in ranks:
            print("\\n".join(queue.get(timeout=60)) or f"{world} ranks: right")
        for process in ranks:
            process.join(timeout=60)
"""


def test_the_layout_checked_is_the_one_a_real_collective_library_produces(tmp_path: Path) -> None:
    """gloo's all-reduce, all-gather and reduce-scatter, one process a rank, leave what the check expects (the
    same definitions as NCCL's: rank order for gathered chunks, chunk k of the sum to rank k)."""
    pytest.importorskip("torch.distributed")
    script = tmp_path / "gloo_ranks.py"
    script.write_text(_GLOO_RANKS)
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:-1] == ["2 ranks: right"] * 2 + ["3 ranks: right"] * 3, done.stdout


# --- timing --------------------------------------------------------------------------------------


class _FakeGpus:
    """A host clock that moves only when a call or a synchronisation costs time."""

    def __init__(self, per_call_s: float, sync_s: float = 10e-6) -> None:
        self.now = 0.0
        self.calls = 0
        self.per_call_s = per_call_s
        self.sync_s = sync_s

    def clock(self) -> float:
        return self.now

    def call(self) -> None:
        self.calls += 1
        self.now += self.per_call_s

    def sync(self) -> None:
        self.now += self.sync_s


def _timed(gpus: _FakeGpus) -> Any:
    return time_collective(gpus.call, gpus.sync, samples=20, sample_s=0.02, warmup_s=0.1, clock=gpus.clock)


def test_a_small_message_is_timed_over_hundreds_of_calls_a_sample() -> None:
    gpus = _FakeGpus(per_call_s=25e-6)  # a 1 MiB all-reduce's order of magnitude
    timing = _timed(gpus)
    assert 780 <= timing.calls_per_sample <= 800  # 20 ms of calls; one synchronisation spread over the batch
    assert len(timing.samples_s) == 20 and all(s == pytest.approx(0.02, rel=0.01) for s in timing.samples_s)
    assert timing.median_per_call_s == pytest.approx(25e-6, rel=0.01)
    assert timing.warmup_s >= 0.1 and gpus.calls == timing.warmup_calls + 20 * timing.calls_per_sample


def test_a_large_message_is_timed_over_a_few_calls_a_sample_after_a_warm_up_of_its_own() -> None:
    gpus = _FakeGpus(per_call_s=4.5e-3)  # a 1 GiB all-reduce over 4 H200s
    timing = _timed(gpus)
    assert timing.calls_per_sample == math.ceil(0.02 / (4.5e-3 + 10e-6)) == 5
    assert 22 <= timing.warmup_calls <= 24 and timing.warmup_s >= 0.1
    assert timing.median_per_call_s == pytest.approx(4.5e-3, rel=0.001)


def test_a_call_slower_than_a_sample_is_one_call_a_sample() -> None:
    timing = _timed(_FakeGpus(per_call_s=0.05))
    assert timing.calls_per_sample == 1 and timing.warmup_calls == 2


def test_an_error_in_a_call_stops_the_timing() -> None:
    def failing() -> None:
        raise RuntimeError("NCCL error: unhandled system error")

    with pytest.raises(RuntimeError, match="NCCL error"):
        time_collective(failing, lambda: None, samples=2, sample_s=0.01, warmup_s=0.0)
