"""The per-run state every stage reads: validated settings, this host's GPUs, the targets, the results,
the baseline and the gate's verdicts."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest

from .gate import Verdict, judge
from .executors.local import plan_slot, slot_size_for, visible_devices
from .hardware import LocalGpu, LocalInventory, Target, discover_local_inventory, resolve_targets, unmet_reason
from .matrix import TARGET_PARAM
from .measure.stats import Summary
from .options import Settings, load_settings
from .record import GPUBENCH_KEY, CellRecord

SESSION_PLUGIN_NAME = "gpubench-session"
BENCHMARK_PLUGIN_NAME = "pytest-benchmark"  # the name pytest-benchmark registers its session under


@dataclass(frozen=True)
class CellResult:
    """What one cell measured, as ``gpubench(...)`` returns it and the terminal summary shows it."""

    record: CellRecord

    @cached_property
    def summary(self) -> Summary:
        return Summary.of(self.record.samples_s)

    @property
    def nodeid(self) -> str:
        return self.record.nodeid

    @property
    def target(self) -> str:
        return str(self.record.details.get("target", "?"))

    @property
    def timer(self) -> str:
        return self.record.timer

    @property
    def cache(self) -> str:
        return str(self.record.details.get("cache", "n/a"))

    @property
    def loops(self) -> int:
        return self.record.loops

    @property
    def stop_reason(self) -> str:
        return str(self.record.details.get("stop_reason", ""))

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.record.details.get("metrics", {}))


@dataclass(frozen=True)
class Baseline:
    """The saved run that ``--benchmark-compare`` chose, as the gate needs it."""

    label: str
    machine_info: dict[str, Any]
    benchmarks: dict[str, dict[str, Any]]


def load_baseline(benchmark_session: Any) -> Baseline | None:
    """The newest run pytest-benchmark loaded for ``--benchmark-compare``; None when it found none."""
    mapping = getattr(benchmark_session, "compared_mapping", None) or {}
    if not mapping:
        return None
    path, benchmarks = list(mapping.items())[-1]
    # pytest-benchmark keys the mapping by the file's path relative to its storage folder
    storage_path = getattr(getattr(benchmark_session, "storage", None), "path", None)
    file = Path(path) if Path(path).is_absolute() or storage_path is None else Path(storage_path) / path
    try:
        machine_info = json.loads(file.read_text()).get("machine_info", {})
    except (OSError, ValueError):
        machine_info = {}  # a storage that is not files: the hardware check has nothing to go on
    return Baseline(Path(path).name, machine_info, dict(benchmarks))


def _cpu_brand(machine_info: dict[str, Any]) -> object:
    return (machine_info.get("cpu") or {}).get("brand_raw")


class GpubenchSession:
    def __init__(self, settings: Settings, inventory: LocalInventory, config: pytest.Config | None = None) -> None:
        self.settings = settings
        self.inventory = inventory
        self.config = config
        self.in_worker = config is not None and hasattr(config, "workerinput")
        self.targets: tuple[Target, ...] = resolve_targets(settings.requests, inventory, settings.catalog)
        self.skip_reasons: dict[Target, str] = {}
        for target in self.targets:
            reason = unmet_reason(target, inventory, settings.catalog)
            if reason is not None:
                self.skip_reasons[target] = reason
        self.slot: tuple[LocalGpu, ...] = inventory.gpus  # the GPUs this process's cells run on, in CUDA order
        if self.in_worker and inventory.gpus:
            self._take_worker_slot(config)
        self.records: list[CellRecord] = []
        self.verdicts: dict[str, Verdict] = {}
        self.summary_written_to: str | None = None

    def _take_worker_slot(self, config: Any) -> None:
        """This xdist worker's own GPUs, made its CUDA_VISIBLE_DEVICES before anything can initialise CUDA."""
        worker_index = int(str(config.workerinput["workerid"]).removeprefix("gw"))
        size = slot_size_for(self.targets, len(self.inventory.gpus))
        if size:
            self.slot = plan_slot(self.inventory.gpus, worker_index, size)
            os.environ["CUDA_VISIBLE_DEVICES"] = visible_devices(self.slot)

    def gpus_for(self, target: Target) -> tuple[LocalGpu, ...]:
        return () if target.is_cpu else self.slot[: target.count]

    @classmethod
    def from_config(cls, config: pytest.Config) -> GpubenchSession:
        settings = load_settings(config)
        return cls(settings, discover_local_inventory(), config)

    def machine_info(self) -> dict[str, Any]:
        return self.inventory.as_machine_info()

    @property
    def benchmark_session(self) -> Any:
        assert self.config is not None
        return self.config.pluginmanager.get_plugin(BENCHMARK_PLUGIN_NAME)

    @cached_property
    def baseline(self) -> Baseline | None:
        return load_baseline(self.benchmark_session)

    @cached_property
    def this_machine_info(self) -> dict[str, Any]:
        return dict(self.benchmark_session.get_machine_info())

    def different_hardware(self, record: CellRecord, baseline: Baseline) -> str | None:
        """Why a verdict against ``baseline`` would compare two machines, or None when it would not."""
        if not baseline.machine_info:
            return None
        if record.details.get("target") == "cpu":
            old, new = _cpu_brand(baseline.machine_info), _cpu_brand(self.this_machine_info)
        else:
            old = (baseline.machine_info.get("gpu") or {}).get("name")
            new = self.inventory.gpus[0].name if self.inventory.gpus else None
        return None if old == new else f"baseline measured on {old}, this run on {new}"

    def judge_cell(self, record: CellRecord) -> Verdict | None:
        """The gate's verdict on a cell measured in this process; None when no gate was asked for."""
        policy = self.settings.gate
        if policy is None:
            return None
        baseline = self.baseline
        if baseline is None:
            verdict = Verdict(record.nodeid, "no-baseline", note="--benchmark-compare found no saved run")
        elif (reason := self.different_hardware(record, baseline)) is not None:
            verdict = Verdict(record.nodeid, "different-hardware", baseline=baseline.label, note=reason)
        elif record.nodeid not in baseline.benchmarks:
            verdict = Verdict(record.nodeid, "new", baseline=baseline.label, note=f"not in {baseline.label}")
        else:
            old = baseline.benchmarks[record.nodeid].get("stats", {}).get("data") or []
            verdict = judge(record.nodeid, record.samples_s, old, policy, baseline.label)
        self.verdicts[record.nodeid] = verdict
        return verdict

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """A cell that fails for its own reasons (not the gate's) still gets a line in the gate's summary."""
        if not self.in_worker and report.failed and any(name == TARGET_PARAM for name, _ in report.user_properties):
            self.note_failed_cell(report.nodeid)

    def note_failed_cell(self, nodeid: str) -> None:
        if self.settings.gate is None or nodeid in self.verdicts:
            return
        baseline = self.baseline
        had_it = baseline is not None and nodeid in baseline.benchmarks
        note = f"new failure: {baseline.label} has this cell" if had_it and baseline else "failed; not in the baseline"
        self.verdicts[nodeid] = Verdict(nodeid, "failed", baseline=baseline.label if baseline else None, note=note)

    def note_missing_cells(self) -> None:
        baseline = self.baseline
        if self.settings.gate is None or baseline is None:
            return
        for nodeid, bench in baseline.benchmarks.items():
            if GPUBENCH_KEY in (bench.get("extra_info") or {}) and nodeid not in self.verdicts:
                self.verdicts[nodeid] = Verdict(nodeid, "missing", baseline=baseline.label,
                                                note=f"in {baseline.label} but not run now")


def get_session(config: pytest.Config) -> GpubenchSession:
    session = config.pluginmanager.get_plugin(SESSION_PLUGIN_NAME)
    if not isinstance(session, GpubenchSession):
        raise RuntimeError("pytest-gpubench is not configured in this run")
    return session
