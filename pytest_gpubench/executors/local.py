"""The local executor's GPU assignment: under xdist each worker sees its own GPUs, and a cell holds the
GPUs it runs on so that no other worker uses them at the same time.

- Each worker gets a *slot*: ``slot_size`` GPUs (the largest count any target asks for), set as its
  ``CUDA_VISIBLE_DEVICES`` before anything in it can initialise CUDA. With enough GPUs the slots are
  disjoint (8 GPUs, ``H100:1``, ``-n 8``: one GPU a worker); with too few they overlap, and then
- a cell takes an exclusive lock file per physical GPU it uses (the first ``count`` of its slot, locked in
  a global order so two workers never deadlock) and waits for it, rather than sharing a GPU.

Without xdist nothing changes: the process sees every GPU and takes no locks.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..hardware import LocalGpu, Target

LOCK_DIR_ENV = "GPUBENCH_LOCK_DIR"


def slot_size_for(targets: Sequence[Target], gpus_on_host: int) -> int:
    counts = [t.count for t in targets if not t.is_cpu and t.count <= gpus_on_host]
    return max(counts, default=0)


def plan_slot(gpus: Sequence[LocalGpu], worker_index: int, slot_size: int) -> tuple[LocalGpu, ...]:
    """Worker ``worker_index``'s GPUs: ``slot_size`` consecutive GPUs from ``worker_index * slot_size``,
    wrapping around when the host has fewer GPUs than workers need."""
    if slot_size <= 0 or not gpus:
        return ()
    start = worker_index * slot_size
    return tuple(gpus[(start + offset) % len(gpus)] for offset in range(min(slot_size, len(gpus))))


def visible_devices(slot: Sequence[LocalGpu]) -> str:
    return ",".join(gpu.uuid or str(gpu.index) for gpu in slot)


def auto_workers(targets: Sequence[Target], gpus_on_host: int) -> int | None:
    """``-n auto`` with GPU targets: one worker per slot of the smallest GPU count asked for."""
    counts = [t.count for t in targets if not t.is_cpu and t.count <= gpus_on_host]
    if not counts:
        return None
    return max(1, gpus_on_host // min(counts))


@dataclass(frozen=True)
class Lease:
    """The GPUs a cell held, and when: enough to show that no two workers used one GPU at once."""

    uuids: tuple[str, ...]
    acquired_at: float
    waited_s: float


def lock_dir() -> Path:
    path = Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "gpubench-gpu-locks")
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def hold_gpus(gpus: Sequence[LocalGpu]) -> Iterator[Lease]:
    """Exclusive locks on ``gpus`` for the block; blocks while another worker holds any of them."""
    ordered = sorted(gpus, key=lambda g: (g.uuid, g.index))
    handles = []
    start = time.time()
    try:
        for gpu in ordered:
            handle = open(lock_dir() / f"{gpu.uuid or gpu.index}.lock", "w")  # noqa: SIM115 - held past this loop
            fcntl.flock(handle, fcntl.LOCK_EX)
            handles.append(handle)
        acquired = time.time()
        yield Lease(tuple(g.uuid or str(g.index) for g in gpus), acquired, acquired - start)
    finally:
        for handle in reversed(handles):
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
