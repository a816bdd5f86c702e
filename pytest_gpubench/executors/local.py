"""The local executor: cells run in this process, on this host's GPUs.

GPU assignment under xdist:

- Each worker gets a *slot*: ``slot_size`` GPUs (the largest count any target asks for), set as its
  ``CUDA_VISIBLE_DEVICES`` before anything in it can initialise CUDA. With enough GPUs the slots are
  disjoint (8 GPUs, ``H100:1``, ``-n 8``: one GPU a worker); with too few they overlap, and then
- a cell takes an exclusive lock file per physical GPU it uses (the first ``count`` of its slot, locked in
  a global order so two workers never deadlock) and waits for it, rather than sharing a GPU. While it
  waits it says, every heartbeat, which GPU it waits for and who holds it; ``--gpubench-lock-timeout``
  bounds the wait.

Without xdist the process sees every GPU and takes no locks, unless a subprocess executor runs a cell on
its behalf (it holds the cell's GPUs for the subprocess).
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
from typing import IO, TYPE_CHECKING

import pytest
from _pytest.runner import runtestprotocol

from ..hardware import LocalGpu, LocalInventory, Target, unmet_reason
from ..reports import merge_round_reports

if TYPE_CHECKING:
    from ..options import Settings

LOCK_DIR_ENV = "GPUBENCH_LOCK_DIR"
LOCK_POLL_S = 0.05


class GpuLockTimeout(RuntimeError):
    """A cell waited longer than --gpubench-lock-timeout for GPUs another process holds."""


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


def plan_cores(cores: Sequence[int], worker_index: int, workers: int) -> tuple[int, ...]:
    """Worker ``worker_index``'s own CPU cores: an equal share of ``cores``, disjoint from the others'.
    Empty when there are fewer cores than workers (they must share, and are told so)."""
    ordered = sorted(cores)
    share = len(ordered) // workers if workers else 0
    if share == 0:
        return ()
    return tuple(ordered[worker_index * share:(worker_index + 1) * share])


def cores_shared_warning(workers: int, cores: int) -> str | None:
    if workers > cores:
        return (f"gpubench: -n {workers} on {cores} CPU core{'s' if cores != 1 else ''}: the workers' CPU cells share "
                f"cores and slow each other down; use -n {cores} or fewer for CPU figures")
    return None


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


def _holder_of(handle: IO[str]) -> str:
    try:
        handle.seek(0)
        return handle.read().strip() or "another process"
    except OSError:
        return "another process"


@contextmanager
def hold_gpus(gpus: Sequence[LocalGpu], holder: str = "", config: pytest.Config | None = None,
              timeout_s: float | None = None) -> Iterator[Lease]:
    """Exclusive locks on ``gpus`` for the block. While another process holds one, a heartbeat names the
    GPU and its holder (pid, cell); past ``timeout_s`` the wait ends in GpuLockTimeout."""
    ordered = sorted(gpus, key=lambda g: (g.uuid, g.index))
    handles: list[IO[str]] = []
    start = time.time()
    try:
        for gpu in ordered:
            name = gpu.uuid or str(gpu.index)
            handle: IO[str] = open(lock_dir() / f"{name}.lock", "a+")  # noqa: SIM115 - held past this loop
            handles.append(handle)
            if not _try_lock(handle):
                _wait_for_lock(handle, name, holder, config, timeout_s, start)
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}, cell {holder or '?'}")
            handle.flush()
        acquired = time.time()
        yield Lease(tuple(g.uuid or str(g.index) for g in gpus), acquired, acquired - start)
    finally:
        for handle in reversed(handles):
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()


def _try_lock(handle: IO[str]) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _wait_for_lock(handle: IO[str], gpu: str, holder: str, config: pytest.Config | None, timeout_s: float | None,
                   start: float) -> None:
    from ..heartbeat import Heartbeat

    beat = Heartbeat(config, holder or "gpubench", f"waiting for GPU {gpu}") if config is not None else None
    try:
        while not _try_lock(handle):
            waited = time.time() - start
            if timeout_s is not None and waited > timeout_s:
                raise GpuLockTimeout(f"[gpu-busy] waited {waited:.0f} s for GPU {gpu}, held by {_holder_of(handle)} "
                                     f"(--gpubench-lock-timeout {timeout_s:g} s)")
            if beat is not None:
                beat.beat(f"held by {_holder_of(handle)}")
            time.sleep(LOCK_POLL_S)
    finally:
        if beat is not None:
            beat.close()


class LocalExecutor:
    """Runs cells in this process on this host's GPUs (this xdist worker's slot of them)."""

    name = "local"

    def __init__(self, inventory: LocalInventory, settings: Settings, slot: tuple[LocalGpu, ...],
                 takes_locks: bool, config: pytest.Config | None) -> None:
        self.inventory = inventory
        self.settings = settings
        self.slot = slot  # the GPUs this process's cells run on, in CUDA order
        self.takes_locks = takes_locks
        self.config = config

    @classmethod
    def for_process(cls, config: pytest.Config | None, inventory: LocalInventory, settings: Settings,
                    targets: Sequence[Target]) -> LocalExecutor:
        """An xdist worker takes its own GPUs, as its CUDA_VISIBLE_DEVICES, before anything can initialise
        CUDA; any other process runs on every GPU."""
        slot = inventory.gpus
        in_worker = config is not None and hasattr(config, "workerinput")
        if in_worker and any(t.is_cpu for t in targets):
            # CPU cells of two workers on one core time each other: each worker keeps to its own cores, and
            # its BLAS and OpenMP pools to as many threads (set before anything imports them)
            workerinput = config.workerinput  # type: ignore[union-attr]
            index = int(str(workerinput["workerid"]).removeprefix("gw"))
            cores = plan_cores(sorted(os.sched_getaffinity(0)), index, int(workerinput["workercount"]))
            if cores:
                os.sched_setaffinity(0, cores)
                for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
                    os.environ.setdefault(name, str(len(cores)))
        if in_worker and inventory.gpus:
            worker_index = int(str(config.workerinput["workerid"]).removeprefix("gw"))  # type: ignore[union-attr]
            size = slot_size_for(targets, len(inventory.gpus))
            if size:
                slot = plan_slot(inventory.gpus, worker_index, size)
                os.environ["CUDA_VISIBLE_DEVICES"] = visible_devices(slot)
        return cls(inventory, settings, slot, in_worker, config)

    def unmet_reason(self, target: Target) -> str | None:
        return unmet_reason(target, self.inventory, self.settings.catalog)

    def gpus_for(self, target: Target) -> tuple[LocalGpu, ...]:
        return () if target.is_cpu else self.slot[: target.count]

    @contextmanager
    def lease(self, target: Target, holder: str, always_lock: bool = False) -> Iterator[Lease]:
        """The cell's GPUs for the block: locked when other processes may use them too."""
        gpus = self.gpus_for(target)
        if gpus and (self.takes_locks or always_lock):
            with hold_gpus(gpus, holder, self.config, self.settings.lock_timeout_s) as lease:
                yield lease
        else:
            yield Lease(tuple(g.uuid or str(g.index) for g in gpus), time.time(), 0.0)

    def run(self, item: pytest.Item, nextitem: pytest.Item | None, rounds: int) -> list[pytest.TestReport]:
        runs: list[list[pytest.TestReport]] = []
        for _ in range(rounds):
            reports = runtestprotocol(item, nextitem=nextitem, log=False)
            runs.append(reports)
            if any(r.failed or r.skipped for r in reports):
                break  # a failing or skipped cell says so once, not once a round
        return merge_round_reports(runs)

    def close(self) -> None:
        return None

