"""GPU specs (``H100:8``, ``A100-80GB``, ``cpu``, ``local``), the GPU catalog, and this host's inventory.

A *target* is what one benchmark cell runs on: a GPU type and a count, or the CPU. ``--gpu`` names
targets; the catalog gives each its memory, list price and datasheet peaks; the local inventory says
what this host really has, so a target it cannot satisfy is skipped with a reason.
"""

from __future__ import annotations

import difflib
import glob
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

MAX_GPUS_PER_CELL = 8  # the largest single host any provider lends (8-GPU HGX boards)


@dataclass(frozen=True)
class GpuType:
    """One GPU model. Peaks are dense (no sparsity) datasheet figures for the SXM part, in TFLOP/s."""

    name: str
    memory_gib: float
    price_per_hour: float | None
    peak_bandwidth_gbps: float | None = None
    peak_tflops: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}), compare=False)
    aliases: tuple[str, ...] = ()
    # one GPU's NVLink bandwidth, both directions together, as the datasheet states it; None: no NVLink
    nvlink_gbps: float | None = None

    @property
    def nvlink_per_direction_gbps(self) -> float | None:
        """The link peak that nccl-tests' bus bandwidth is comparable to: a rank sends and receives at once, each
        direction at half the datasheet's total (H100/H200 SXM: 900 GB/s -> 450 GB/s)."""
        return self.nvlink_gbps / 2 if self.nvlink_gbps else None

    def peak_tflops_for(self, dtype: str | None) -> float | None:
        return self.peak_tflops.get(dtype) if dtype else None


def _peaks(**tflops: float) -> Mapping[str, float]:
    return MappingProxyType(dict(tflops))


# Prices: Modal's published per-GPU hourly list prices (USD), as users of this plugin pay them; override
# them with [tool.gpubench.prices]. Peaks: NVIDIA datasheets, dense tensor-core rates; None where the
# vendor publishes no figure we trust, so "% of peak" is left out rather than guessed. NVLink: the SXM parts'
# per-GPU totals (NVLink 5 on B200: 1.8 TB/s; NVLink 4 on H100/H200: 900 GB/s; NVLink 3 on A100: 600 GB/s); the
# PCIe parts in the catalog have no NVLink.
_HOPPER = dict(fp64=67.0, fp32=67.0, tf32=494.7, bf16=989.4, fp16=989.4, fp8=1978.9)
_AMPERE_A100 = dict(fp64=19.5, fp32=19.5, tf32=156.0, bf16=312.0, fp16=312.0)
GPU_CATALOG: tuple[GpuType, ...] = (
    GpuType("B200", 180, 6.25, 8000, _peaks(bf16=2250.0, fp16=2250.0, fp8=4500.0), nvlink_gbps=1800),
    GpuType("H200", 141, 4.54, 4800, _peaks(**_HOPPER), nvlink_gbps=900),
    GpuType("H100", 80, 3.95, 3350, _peaks(**_HOPPER), nvlink_gbps=900),
    GpuType("A100-80GB", 80, 2.50, 2039, _peaks(**_AMPERE_A100), nvlink_gbps=600),
    GpuType("A100-40GB", 40, 2.10, 1555, _peaks(**_AMPERE_A100), aliases=("A100",), nvlink_gbps=600),
    GpuType("L40S", 48, 1.95, 864, _peaks(fp32=91.6, tf32=183.0, bf16=362.1, fp16=362.1, fp8=733.0)),
    GpuType("A10", 24, 1.10, 600, _peaks(fp32=31.2, tf32=62.5, bf16=125.0, fp16=125.0)),
    GpuType("A10G", 24, 1.10, 600),
    GpuType("L4", 24, 0.80, 300, _peaks(fp32=30.3, tf32=60.0, bf16=121.0, fp16=121.0, fp8=242.5)),
    GpuType("T4", 16, 0.59, 320, _peaks(fp32=8.1, fp16=65.0)),
)
SPECIAL_TARGETS = ("local", "cpu")


class GpuSpecError(ValueError):
    """A --gpu spec that cannot be understood; the message is one line saying what to write instead."""


@dataclass(frozen=True)
class Catalog:
    types: tuple[GpuType, ...] = GPU_CATALOG

    def with_prices(self, prices: Mapping[str, float]) -> Catalog:
        by_name = {t.name: t for t in self.types}
        for name, price in prices.items():
            gpu_type = self.lookup(name)
            by_name[gpu_type.name] = replace(gpu_type, price_per_hour=float(price))
        return Catalog(tuple(by_name[t.name] for t in self.types))

    def known_names(self) -> list[str]:
        return [t.name for t in self.types]

    def lookup(self, name: str) -> GpuType:
        wanted = name.strip().upper()
        for gpu_type in self.types:
            if wanted == gpu_type.name.upper() or wanted in (a.upper() for a in gpu_type.aliases):
                return gpu_type
        names = self.known_names()
        close = difflib.get_close_matches(wanted, [n.upper() for n in names], n=1)
        hint = f"did you mean {names[[n.upper() for n in names].index(close[0])]}? " if close else ""
        raise GpuSpecError(f"unknown GPU type {name!r}; {hint}known types: {', '.join(names)} (or local, cpu)")


@dataclass(frozen=True)
class Target:
    """What one cell runs on. ``gpu_type`` is None for the CPU; ``count`` is the GPUs the cell gets."""

    gpu_type: GpuType | None
    count: int

    @property
    def is_cpu(self) -> bool:
        return self.gpu_type is None

    @property
    def id(self) -> str:
        return "cpu" if self.gpu_type is None else f"{self.gpu_type.name}:{self.count}"

    @property
    def price_per_hour(self) -> float | None:
        if self.gpu_type is None or self.gpu_type.price_per_hour is None:
            return None
        return self.gpu_type.price_per_hour * self.count


CPU_TARGET = Target(None, 0)


@dataclass(frozen=True)
class GpuRequest:
    """One parsed SPEC of --gpu, before ``local`` is resolved against this host."""

    text: str
    gpu_type: GpuType | None
    count: int
    is_local: bool = False
    is_cpu: bool = False


_SPEC_SHAPE = "write TYPE[:COUNT] such as H100:8 or A100-80GB, or local, or cpu"


def parse_gpu_spec(text: str, catalog: Catalog) -> GpuRequest:
    spec = text.strip()
    if not spec:
        raise GpuSpecError(f"empty GPU spec; {_SPEC_SHAPE}")
    name, sep, count_text = spec.partition(":")
    if name.lower() in SPECIAL_TARGETS:
        if sep:
            raise GpuSpecError(f"{spec!r}: {name.lower()} takes no count; write {name.lower()}")
        return GpuRequest(spec, None, 0, is_local=name.lower() == "local", is_cpu=name.lower() == "cpu")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", name):
        raise GpuSpecError(f"{spec!r} is not a GPU spec; {_SPEC_SHAPE}")
    gpu_type = catalog.lookup(name)
    count = 1
    if sep:
        if not re.fullmatch(r"[0-9]+", count_text.strip()):
            raise GpuSpecError(f"{spec!r}: the count must be a whole number from 1 to {MAX_GPUS_PER_CELL}, as in {gpu_type.name}:2")
        count = int(count_text)
        if not 1 <= count <= MAX_GPUS_PER_CELL:
            raise GpuSpecError(
                f"{spec!r}: a cell gets 1 to {MAX_GPUS_PER_CELL} GPUs of one host; write {gpu_type.name}:{MAX_GPUS_PER_CELL} or fewer"
            )
    return GpuRequest(spec, gpu_type, count)


def parse_gpu_option(values: Sequence[str], catalog: Catalog) -> tuple[GpuRequest, ...]:
    """Parse every ``--gpu`` value (each a comma-separated list of SPECs) into requests, in order."""
    requests: list[GpuRequest] = []
    for value in values:
        for spec in value.split(","):
            requests.append(parse_gpu_spec(spec, catalog))
    return tuple(requests)


# --- this host -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalGpu:
    index: int
    name: str
    memory_mib: int
    uuid: str = ""
    max_sm_clock_mhz: int | None = None
    max_memory_clock_mhz: int | None = None


@dataclass(frozen=True)
class LocalInventory:
    gpus: tuple[LocalGpu, ...] = ()
    driver: str | None = None
    cuda: str | None = None
    source: str = "none"

    def type_names(self, catalog: Catalog) -> list[str]:
        """Each GPU's catalog type, or for a GPU the catalog lacks, its device name made id-safe."""
        return [classify_gpu_name(g.name, catalog) or id_safe(g.name) for g in self.gpus]

    def describe(self) -> str:
        if not self.gpus:
            return "no GPU"
        counts: dict[str, int] = {}
        for gpu in self.gpus:
            counts[gpu.name] = counts.get(gpu.name, 0) + 1
        return ", ".join(f"{n}× {name}" for name, n in counts.items())

    def as_machine_info(self) -> dict[str, object]:
        first = self.gpus[0] if self.gpus else None
        return {
            "name": first.name if first else None,
            "count": len(self.gpus),
            "memory_mib": first.memory_mib if first else None,
            "driver": self.driver,
            "cuda": self.cuda,
            "max_sm_clock_mhz": first.max_sm_clock_mhz if first else None,
            "max_memory_clock_mhz": first.max_memory_clock_mhz if first else None,
            "source": self.source,
        }


def id_safe(device_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]+", "-", device_name).strip("-")


def classify_gpu_name(device_name: str, catalog: Catalog) -> str | None:
    """Map a driver's device name ('NVIDIA A100-SXM4-80GB', 'Tesla T4') to a catalog type name."""
    upper = device_name.upper()
    tokens = set(re.split(r"[^A-Z0-9]+", upper))
    if "A100" in tokens:
        return "A100-80GB" if "80GB" in tokens else "A100-40GB"
    for gpu_type in catalog.types:
        if gpu_type.name.upper() in tokens:
            return gpu_type.name
    return None


_SMI_FIELDS = "index,name,memory.total,uuid,driver_version,clocks.max.sm,clocks.max.mem"


def _int_or_none(text: str) -> int | None:
    text = text.strip()
    return int(float(text)) if re.fullmatch(r"[0-9.]+", text) else None


def parse_nvidia_smi_csv(text: str) -> tuple[list[LocalGpu], str | None]:
    gpus: list[LocalGpu] = []
    driver = None
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 7 or not parts[0].isdigit():
            continue
        gpus.append(
            LocalGpu(
                index=int(parts[0]),
                name=parts[1],
                memory_mib=_int_or_none(parts[2]) or 0,
                uuid=parts[3],
                max_sm_clock_mhz=_int_or_none(parts[5]),
                max_memory_clock_mhz=_int_or_none(parts[6]),
            )
        )
        driver = parts[4]
    return gpus, driver


def _visible(gpus: list[LocalGpu]) -> tuple[LocalGpu, ...]:
    """Honour CUDA_VISIBLE_DEVICES (indices or UUIDs), as CUDA programs in this process will."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return tuple(gpus)
    chosen: list[LocalGpu] = []
    for entry in (e.strip() for e in visible.split(",") if e.strip()):
        match = [g for g in gpus if (entry.isdigit() and g.index == int(entry)) or (entry.startswith("GPU-") and g.uuid.startswith(entry))]
        if not match:
            break  # CUDA stops at the first invalid entry
        chosen.extend(m for m in match if m not in chosen)
    return tuple(chosen)


def _inventory_from_nvidia_smi() -> LocalInventory | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, f"--query-gpu={_SMI_FIELDS}", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout
        banner = subprocess.run([smi], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    gpus, driver = parse_nvidia_smi_csv(out)
    cuda = re.search(r"CUDA Version:\s*([0-9.]+)", banner)
    return LocalInventory(_visible(gpus), driver, cuda.group(1) if cuda else None, "nvidia-smi")


def _inventory_from_torch() -> LocalInventory | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append(LocalGpu(index, props.name, props.total_memory // 2**20, str(getattr(props, "uuid", ""))))
    return LocalInventory(tuple(gpus), None, torch.version.cuda, "torch")


def discover_local_inventory() -> LocalInventory:
    """What GPUs this host has: nvidia-smi (which reads NVML) first, torch when there is no nvidia-smi.

    torch is asked only where a GPU device node exists: importing it costs seconds on every run.
    """
    inventory = _inventory_from_nvidia_smi()
    if inventory is None and glob.glob("/dev/nvidia[0-9]*"):
        inventory = _inventory_from_torch()
    return inventory or LocalInventory()


def resolve_targets(requests: Sequence[GpuRequest], inventory: LocalInventory, catalog: Catalog) -> tuple[Target, ...]:
    """Turn requests into targets; ``local`` becomes this host's GPUs (all of its first type), or the CPU."""
    targets: list[Target] = []
    for request in requests:
        if request.is_cpu:
            target = CPU_TARGET
        elif request.is_local:
            target = local_target(inventory, catalog)
        else:
            assert request.gpu_type is not None
            target = Target(request.gpu_type, request.count)
        if target not in targets:
            targets.append(target)
    return tuple(targets)


def local_target(inventory: LocalInventory, catalog: Catalog) -> Target:
    if not inventory.gpus:
        return CPU_TARGET
    names = inventory.type_names(catalog)
    first = names[0]
    try:
        gpu_type = catalog.lookup(first)
    except GpuSpecError:  # a GPU the catalog does not know still benchmarks, without peaks or price
        gpu_type = GpuType(first, round(inventory.gpus[0].memory_mib / 1024, 1), None)
    return Target(gpu_type, names.count(first))


def unmet_reason(target: Target, inventory: LocalInventory, catalog: Catalog) -> str | None:
    """Why this host cannot run ``target`` locally, or None when it can."""
    if target.is_cpu:
        return None
    assert target.gpu_type is not None
    have = sum(1 for name in inventory.type_names(catalog) if name == target.gpu_type.name)
    if have >= target.count:
        return None
    return f"needs {target.count}× {target.gpu_type.name}; this host has {inventory.describe()}"
