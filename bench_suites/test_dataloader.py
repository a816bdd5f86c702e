"""A data-loading training step: a small ResNet-style convnet trained for a fixed number of steps from a torch
``DataLoader`` whose per-sample CPU work is real, against ``num_workers``: throughput (training samples/s) and
how much of the time the device sat idle waiting for the loader.

The dataset holds JPEG-encoded images, made once per run with PIL; ``__getitem__`` decodes one with PIL and
augments it as torchvision's ImageNet recipe does (random resized crop, horizontal flip, normalise to float32),
so each sample costs what a real input pipeline's does (about 2 ms on one core of a current server CPU for the
GPU size, a 448 px JPEG of ~100 KiB cropped to 224 px). With ``num_workers=0`` the training loop decodes every
batch itself and the device waits; with enough workers the loader keeps up and the device does not.

A cell whose device was idle more than half of the timed steps, while the loop was waiting on the loader, is
flagged ``cpu-starved``: the loader, not the device, sets its throughput (the seed of this suite: an A100 run
that looked hung was a validation phase starved of CPU, and it printed nothing). Heartbeats say which step the
loop is at and what it is waiting for, so a slow loader never looks like a hang.

Sizes. On a GPU: batches of 64 images of 3x224x224 from 448 px JPEGs, and a network of 33.7 GFLOP a sample
forward, 6.5 TFLOP a training step (backward ~ 2x forward), in bf16 autocast and channels-last. Estimated for an
H200: ~15-30 ms of convolutions (cuDNN's 3x3 convolutions at 200-450 of the ~700 TFLOP/s a bf16 matrix product
reaches) and ~5 ms of memory-bound BN, ReLU and adds (~30 passes over each block's activations at ~3.5 TB/s), so
~20-40 ms a step, against 130-210 ms for one core to decode, augment and collate a batch (2-3 ms a sample,
measured on a cloud EPYC core). With ``num_workers=0`` the GPU idles ~80 % of the time; 8 workers deliver a
batch every ~20-30 ms, about a step's time, and feed it. The margins: ``num_workers=0`` is flagged while a batch's
decode takes more than 2 GPU steps, and 8 workers are not while it takes less than ~12 (8 workers at ~75 % of
linear scaling), so either estimate may be off by about 2x either way. On the CPU everything is small (64 px
JPEGs, batches of 16). $GPUBENCH_DATALOADER_SOURCE_PX sets the side of the stored JPEGs (the per-sample work:
decoding grows with its square) to starve or feed a cell.
"""

from __future__ import annotations

import io
import math
import os
import random
import shutil
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest

from pytest_gpubench.hardware import Target
from pytest_gpubench.heartbeat import ticking

NUM_WORKERS = [0, 2, 4, 8]
SOURCE_PX_ENV = "GPUBENCH_DATALOADER_SOURCE_PX"
# Idle above half the time means the device waits longer than it computes: the loader sets the pace, and a
# loader that kept up would more than double the throughput (it is 1 / (1 - idle) times the measured one).
# Below half, the figure is mostly the device's own; the exact idle share is in every cell's extra_info.
STARVED_IDLE = 0.5
PREFETCH_FACTOR = 2  # batches each worker is asked for ahead (DataLoader's default)
# ImageNet's channel means and standard deviations, in 0-255 units: the normalisation torchvision's recipe applies
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255


@dataclass(frozen=True)
class Sizes:
    source_px: int  # side of each stored JPEG: what the loader decodes
    crop_px: int  # side of the model's input
    batch: int
    width: int  # channels of the first stage; each later stage doubles them at half the side
    blocks: tuple[int, ...]  # residual blocks (two 3x3 convolutions each) per stage
    images: int  # distinct JPEGs in memory; samples cycle through them, each decoded anew
    warmup_steps: int  # untimed: cuDNN picks its kernels, allocators settle (plus the loader's start: warmup())
    steps: int  # timed; each is one sample of the cell
    classes: int = 100


# 6+6+6 blocks at 128/256/512 channels on 56/28/14 px: every 3x3 convolution is 0.925 GFLOP a sample
GPU_SIZES = Sizes(source_px=448, crop_px=224, batch=64, width=128, blocks=(6, 6, 6), images=128,
                  warmup_steps=12, steps=40)
# a few seconds a cell on a 2-core CI machine, and the model's step still outweighs the 64 px decodes
CPU_SIZES = Sizes(source_px=64, crop_px=64, batch=16, width=32, blocks=(1, 1, 1), images=32,
                  warmup_steps=3, steps=12)


def sizes_for(target: Target) -> Sizes:
    sizes = CPU_SIZES if target.is_cpu else GPU_SIZES
    raw = os.environ.get(SOURCE_PX_ENV, "").strip()
    if not raw:
        return sizes
    if not raw.isdigit() or not 16 <= int(raw) <= 4096:
        pytest.fail(f"{SOURCE_PX_ENV}={raw!r}: give the stored JPEGs' side in pixels, 16 to 4096 (e.g. 448)",
                    pytrace=False)
    return replace(sizes, source_px=int(raw))


def warmup(sizes: Sizes, num_workers: int) -> int:
    """Untimed steps: the size's own, plus one for every batch the workers are asked for at once when the loader
    starts. They arrive in a burst after the workers' first decodes; timing from there would count the backlog as
    throughput the loader does not sustain."""
    return sizes.warmup_steps + PREFETCH_FACTOR * num_workers


def shared_memory_shortfall(sizes: Sizes, num_workers: int) -> str | None:
    """Why this host cannot run the cell's workers, or None. Workers hand batches over in shared memory
    (/dev/shm); a container's default of 64 MiB holds not even one GPU batch (38.5 MB), and a worker that runs
    out dies of a bus error with no word of why."""
    if not num_workers:
        return None
    try:
        free = shutil.disk_usage("/dev/shm").free
    except OSError:
        return None  # no /dev/shm to measure (not Linux): let torch say what it needs
    batch_bytes = sizes.batch * 3 * sizes.crop_px**2 * 4
    needed = batch_bytes * (PREFETCH_FACTOR * num_workers + 2)  # every batch in flight, and one being collated
    if free >= needed:
        return None
    return (f"num_workers={num_workers} hands its batches over in /dev/shm, which has {free / 2**20:.0f} MiB free; "
            f"{num_workers} workers with {PREFETCH_FACTOR} batches of {batch_bytes / 2**20:.1f} MiB each in flight "
            f"need ~{needed / 2**20:.0f} MiB (a container: --shm-size=2g)")


def encode_jpegs(count: int, side: int, seed: int) -> list[bytes]:
    """``count`` photo-like JPEGs of ``side`` px: smooth colour fields with grain. The grain matters: a JPEG's
    decode time follows its entropy-coded data, and a flat synthetic image would decode several times faster
    than a photograph of the same size."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    encoded = []
    for _ in range(count):
        coarse = rng.integers(0, 256, (max(2, side // 8), max(2, side // 8), 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((side, side), Image.Resampling.BICUBIC), dtype=np.int16)
        grain = rng.integers(-20, 21, smooth.shape, dtype=np.int16)
        pixels = np.clip(smooth + grain, 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        encoded.append(buffer.getvalue())
    return encoded


class JpegDataset:
    """A map-style dataset (what ``DataLoader`` needs: ``__len__`` and ``__getitem__``) of JPEG bytes and labels.

    Augmentation draws from the ``random`` module, which ``DataLoader`` seeds differently in every worker, so
    workers do not repeat one another's crops."""

    def __init__(self, jpegs: Sequence[bytes], labels: Sequence[int], length: int, crop_px: int) -> None:
        self.jpegs = list(jpegs)
        self.labels = list(labels)
        self.length = length
        self.crop_px = crop_px

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        from PIL import Image

        which = index % len(self.jpegs)
        with Image.open(io.BytesIO(self.jpegs[which])) as stored:
            image = stored.convert("RGB")  # the full decode, as torchvision's loader does (no draft-mode shortcut)
        width, height = image.size
        # torchvision's RandomResizedCrop, square: 35-100 % of the area, resized to the model's input
        side = max(1, int(min(width, height) * math.sqrt(random.uniform(0.35, 1.0))))
        left, top = random.randint(0, width - side), random.randint(0, height - side)
        image = image.resize((self.crop_px, self.crop_px), Image.Resampling.BILINEAR,
                             box=(left, top, left + side, top + side))
        pixels = np.asarray(image, dtype=np.float32)
        if random.random() < 0.5:
            pixels = pixels[:, ::-1]
        pixels = (pixels - MEAN) / STD
        return np.ascontiguousarray(pixels.transpose(2, 0, 1)), self.labels[which]


def build_model(sizes: Sizes) -> Any:
    """A ResNet-style network: a 4x4 stride-4 stem, stages of residual blocks (3x3 conv, BN, ReLU, 3x3 conv, BN,
    add, ReLU), a 2x2 stride-2 convolution between stages, average pooling and a linear classifier."""
    from torch import nn

    class Residual(nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.body = nn.Sequential(*conv_bn(channels, channels, 3, 1), nn.ReLU(inplace=True),
                                      *conv_bn(channels, channels, 3, 1))
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x: Any) -> Any:
            return self.relu(x + self.body(x))

    def conv_bn(cin: int, cout: int, kernel: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2 if kernel == 3 else 0, bias=False),
                nn.BatchNorm2d(cout)]

    channels = sizes.width
    layers: list[nn.Module] = [*conv_bn(3, channels, 4, 4), nn.ReLU(inplace=True)]
    for stage, blocks in enumerate(sizes.blocks):
        if stage:
            layers += [*conv_bn(channels, 2 * channels, 2, 2), nn.ReLU(inplace=True)]
            channels *= 2
        layers += [Residual(channels) for _ in range(blocks)]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, sizes.classes)]
    return nn.Sequential(*layers)


def forward_flops_per_sample(model: Any, sizes: Sizes, device: str) -> float:
    """Multiply-adds x 2 of the convolutions and the linear layer for one sample, counted from the shapes one
    forward pass produces (BN, ReLU and pooling are memory-bound and not counted)."""
    import torch
    from torch import nn

    total = 0.0

    def count(module: Any, inputs: Any, output: Any) -> None:
        nonlocal total
        per_output = (module.in_channels // module.groups * math.prod(module.kernel_size)
                      if isinstance(module, nn.Conv2d) else module.in_features)
        total += 2.0 * per_output * output[0].numel()

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, sizes.crop_px, sizes.crop_px, device=device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return total


@dataclass(frozen=True)
class StepTimes:
    periods_s: tuple[float, ...]  # end of the previous step (or of the window's start) -> end of this step
    busy_s: tuple[float, ...]  # each step's own work, loader wait excluded
    wall_s: float  # the timed window

    @property
    def idle_fraction(self) -> float:
        return max(0.0, 1.0 - sum(self.busy_s) / self.wall_s) if self.wall_s > 0 else 0.0


class StepClock:
    """Marks at the timed window's start and at each step's beginning and end, on one clock; the clocks below
    differ only in what a mark is, how two are subtracted, and whether queued work must be waited for."""

    def __init__(self) -> None:
        self._origin: Any = None
        self._begins: list[Any] = []
        self._ends: list[Any] = []

    def _mark(self) -> Any:
        raise NotImplementedError

    def _seconds(self, earlier: Any, later: Any) -> float:
        raise NotImplementedError

    def _settle(self) -> None:
        """Wait for work already queued, where the clock runs behind the host."""

    def start(self) -> None:
        self._settle()  # the warm-up's queued work is not the window's
        self._origin = self._mark()

    def step_began(self) -> None:
        self._begins.append(self._mark())

    def step_ended(self) -> None:
        self._ends.append(self._mark())

    def finish(self) -> StepTimes:
        self._settle()
        starts = [self._origin, *self._ends[:-1]]
        return StepTimes(
            periods_s=tuple(self._seconds(a, b) for a, b in zip(starts, self._ends)),
            busy_s=tuple(self._seconds(a, b) for a, b in zip(self._begins, self._ends)),
            wall_s=self._seconds(self._origin, self._ends[-1]),
        )


class CudaStepClock(StepClock):
    """The GPU's own clock: CUDA events on the stream that runs the steps.

    An event recorded before a step's host-to-device copy and one after its optimizer step bracket the step's
    work on the device; the stream has nothing queued between one step's end and the next step's start, as the
    host has not submitted it yet (it is fetching the batch). So busy = the brackets summed, wall = the window's
    start event to the last step's end event, idle = 1 - busy / wall, all on the device's clock. Gaps inside a
    bracket (kernel-launch latency, when the GPU outruns the host) count as busy, so the idle share is a lower
    bound: launch gaps never raise the flag. nvidia-smi's utilisation would not do: it reports the share of
    1/6 s periods in which any kernel ran, so one tiny kernel a period reads 100 %. The profiler (CUPTI) would
    also work, at a cost, and the JAX timer needs it to itself."""

    timer = "cuda_event"
    method = ("cuda_events: CUDA events before each step's host-to-device copy and after its optimizer step; "
              "idle = 1 - sum(step brackets) / (window start event -> last step's end event), on the device clock")
    resolution_s = 0.5e-6  # cudaEventElapsedTime's documented resolution

    def __init__(self) -> None:
        import torch

        super().__init__()
        self._torch = torch

    def _mark(self) -> Any:
        event = self._torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def _seconds(self, earlier: Any, later: Any) -> float:
        return float(earlier.elapsed_time(later)) / 1e3

    def _settle(self) -> None:
        self._torch.cuda.synchronize()


class HostStepClock(StepClock):
    """The CPU's clock, when the model runs on the CPU: a step's work runs in the loop's own thread, so the
    device is idle exactly while the loop waits in ``next(loader)``; busy = the rest of each step."""

    timer = "cpu_perf_counter"
    method = ("host_clock: the model runs on the CPU in the loop's thread; idle = time spent in next(loader) / "
              "wall time of the timed steps, on perf_counter")
    resolution_s = time.get_clock_info("perf_counter").resolution

    def _mark(self) -> float:
        return time.perf_counter()

    def _seconds(self, earlier: float, later: float) -> float:
        return later - earlier


@dataclass
class Progress:
    """Where the loop is, for the heartbeat thread to read (floats, ints and a str: no lock needed to read them).

    The line says what share of the loop so far went to waiting on the DataLoader, not only what the loop does
    at the instant of the beat: that instant is no fair sample (the heartbeat thread runs when it gets the GIL,
    which depends on what the loop holds then), and in CI both beats of a loop that waited 83 % of its time
    read "running the step"."""

    total: int
    warmup: int
    num_workers: int
    step: int = 0
    doing: str = "starting the loader's workers"
    loop_began: float | None = None
    waited_s: float = 0.0  # finished waits on next(loader)
    waiting_since: float | None = None  # the wait in progress, if any

    def describe(self) -> str:
        stage = " (warm-up)" if self.step < self.warmup else ""
        line = f"training step {self.step + 1}/{self.total}{stage}, {self.doing} (num_workers={self.num_workers})"
        began, since = self.loop_began, self.waiting_since
        now = time.perf_counter()
        if began is None or now <= began:
            return line
        waited = self.waited_s + (now - since if since is not None else 0.0)
        return f"{line}; waited on the DataLoader {waited / (now - began):.0%} of the loop so far"


@pytest.fixture(scope="module")
def jpeg_sets() -> dict[tuple[int, int], list[bytes]]:
    """JPEGs by (count, side), encoded once per module: every cell of a size decodes the same bytes."""
    return {}


def _train(model: Any, optimizer: Any, batches: Iterator[Any], warmup_steps: int, steps: int, device: str,
           clock: Any, progress: Progress) -> tuple[StepTimes, float, float]:
    """Warm-up then timed steps; returns the timed steps' times, the loop's time in next(loader) during them, and
    the last loss."""
    import torch

    on_gpu = device == "cuda"
    waited = 0.0
    loss = None
    for step in range(warmup_steps + steps):
        timed = step >= warmup_steps
        if step == warmup_steps:
            clock.start()
        progress.step, progress.doing = step, "waiting on the DataLoader"
        asked = time.perf_counter()
        if progress.loop_began is None:
            progress.loop_began = asked
        progress.waiting_since = asked
        images, labels = next(batches)
        got = time.perf_counter()
        progress.waited_s, progress.waiting_since = progress.waited_s + (got - asked), None
        if timed:
            waited += got - asked
            clock.step_began()
        progress.doing = "running the step"
        if on_gpu:
            images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            labels = labels.to(device, non_blocking=True)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=on_gpu):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if timed:
            clock.step_ended()
    progress.doing = "waiting for the device to finish the last step"
    times = clock.finish()
    assert loss is not None
    return times, waited, float(loss.item())


# DataLoader workers are forked (PyTorch's default on Linux). Python 3.12 warns about any fork of a process with
# threads (CUDA's, the heartbeat's); the workers run only the dataset's PIL and numpy code, never CUDA.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
@pytest.mark.parametrize("num_workers", NUM_WORKERS, ids=[f"workers{n}" for n in NUM_WORKERS])
def test_dataloader_training(gpubench, gpubench_target, request, jpeg_sets, num_workers):
    torch = pytest.importorskip("torch")
    pytest.importorskip("PIL", reason="the data-loading suite decodes JPEGs with Pillow: pip install pillow")
    sizes = sizes_for(gpubench_target)
    device = gpubench.device
    shortfall = shared_memory_shortfall(sizes, num_workers)
    if shortfall:
        pytest.skip(shortfall)
    cell = request.node.nodeid

    key = (sizes.images, sizes.source_px)
    if key not in jpeg_sets:
        with ticking(request.config, cell, f"encoding {sizes.images} JPEGs of {sizes.source_px} px"):
            jpeg_sets[key] = encode_jpegs(sizes.images, sizes.source_px, seed=0)
    jpegs = jpeg_sets[key]
    labels = np.random.default_rng(1).integers(0, sizes.classes, len(jpegs)).tolist()
    warmup_steps = warmup(sizes, num_workers)
    dataset = JpegDataset(jpegs, labels, (warmup_steps + sizes.steps) * sizes.batch, sizes.crop_px)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=sizes.batch, shuffle=True, drop_last=True, num_workers=num_workers,
        prefetch_factor=PREFETCH_FACTOR if num_workers else None, pin_memory=device == "cuda",
        generator=torch.Generator().manual_seed(0))

    torch.manual_seed(0)
    model = build_model(sizes).to(device)
    if device == "cuda":
        model = model.to(memory_format=torch.channels_last)
    flops = forward_flops_per_sample(model, sizes, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=5e-5)
    clock = CudaStepClock() if device == "cuda" else HostStepClock()
    progress = Progress(warmup_steps + sizes.steps, warmup_steps, num_workers)
    cudnn_benchmark, threads = torch.backends.cudnn.benchmark, torch.get_num_threads()
    torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN time its kernels once, in the warm-up
    if device == "cpu":
        # the CPU model stands in for a device: one core of its own, the others for the loader's workers. A team
        # of OpenMP threads on cores the workers (or a neighbour) also use stalls at every barrier: on a 2-core
        # machine 10 ms steps took 0.3-1.4 s, in the step, not in the loader
        torch.set_num_threads(1)
    try:
        with ticking(request.config, cell, "training", detail=progress.describe):
            times, waited_s, last_loss = _train(model, optimizer, iter(loader), warmup_steps, sizes.steps, device,
                                                clock, progress)
    finally:
        torch.backends.cudnn.benchmark = cudnn_benchmark
        torch.set_num_threads(threads)
    assert math.isfinite(last_loss), f"the training diverged (last loss {last_loss}): its timings mean nothing"

    idle = times.idle_fraction
    waited = waited_s / times.wall_s
    cores = len(os.sched_getaffinity(0))
    what = "GPU" if device == "cuda" else "CPU"
    gpubench.extra_info.update({
        "num_workers": num_workers,
        "cpu_cores_available": cores,  # the loader's workers share these (the process's affinity)
        "batch": sizes.batch,
        "warmup_steps": warmup_steps,
        "timed_steps": sizes.steps,
        "source_px": sizes.source_px,
        "crop_px": sizes.crop_px,
        "jpeg_kib_mean": sum(map(len, jpegs)) / len(jpegs) / 1024,
        "model_forward_gflop_per_sample": flops / 1e9,
        "train_tflop_per_step": 3 * flops * sizes.batch / 1e12,  # backward ~ 2x forward
        "train_dtype": "bf16 autocast" if device == "cuda" else "fp32",
        "idle_method": clock.method,
        "device_idle_fraction": idle,
        "device_busy_s": sum(times.busy_s),
        "timed_wall_s": times.wall_s,
        "loader_wait_fraction": waited,  # host clock: the loop's time in next(loader), over the same window
        "starved_idle_threshold": STARVED_IDLE,
        "timer_resolution_s": clock.resolution_s,
        "last_loss": last_loss,
    })
    # starved: the device was idle most of the time AND the loop spent that time asking the loader for batches (a
    # device idle while the host does something else, launching kernels say, is another story)
    if idle > STARVED_IDLE and waited > STARVED_IDLE:
        gpubench.flag(f"cpu-starved: {what} idle {idle:.0%} of the timed steps waiting on the DataLoader "
                      f"(num_workers={num_workers}, {cores} CPU cores; the loop waited on it {waited:.0%} of the time)")
    # no items=: items/s would come from the median step, and workers hand batches over in bursts (an H200 cell
    # with 4 workers read 3,228 items/s by its median step and 799 samples/s by its wall time); the throughput is
    # the wall time's
    gpubench.record(times.periods_s, timer=clock.timer, metrics={
        "samples_per_s": sizes.batch * sizes.steps / times.wall_s,
        "device_idle_pct": 100 * idle,
        "device_step_ms": 1e3 * statistics.median(times.busy_s),
    })
