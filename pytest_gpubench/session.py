"""The per-run state every stage reads: validated settings, this host, the targets, the executors, and —
in the process that owns pytest-benchmark — the records ingested so far and the gate's verdicts."""

from __future__ import annotations

import os
import uuid
from dataclasses import replace
from functools import cached_property
from typing import Any

import pytest

from .baseline import Baseline, load_baseline
from .environments import RUN_ID_ENV, EnvironmentCache, default_env_dir
from .executors import Executor, ExecutorChoice
from .executors.local import LocalExecutor
from .executors.subprocess import RUNNER_ENV, SubprocessExecutor
from .gate import Verdict
from .hardware import LocalInventory, Target, discover_local_inventory, parse_gpu_option, resolve_targets
from .matrix import Commit, Matrix, Variant
from .measure.sampler import DeviceWarmth
from .options import Settings, load_settings
from .record import CellRecord

SESSION_PLUGIN_NAME = "gpubench-session"
BENCHMARK_PLUGIN_NAME = "pytest-benchmark"  # the name pytest-benchmark registers its session under


def _with_resolved_commit_targets(matrix: Matrix, inventory: LocalInventory, settings: Settings) -> tuple[Matrix, tuple[Target, ...]]:
    """Commits name the targets they need as specs ('H100:2', 'local'); cells compare target ids."""
    extra: list[Target] = []
    commits = []
    for commit in matrix.commits:
        if not commit.targets:
            commits.append(commit)
            continue
        targets = resolve_targets(parse_gpu_option(list(commit.targets), settings.catalog), inventory, settings.catalog)
        extra.extend(targets)
        commits.append(Commit(commit.name, commit.variants, tuple(t.id for t in targets)))
    return replace(matrix, commits=tuple(commits)), tuple(extra)


class GpubenchSession:
    def __init__(self, settings: Settings, inventory: LocalInventory, config: pytest.Config | None = None) -> None:
        self.settings = settings
        self.inventory = inventory
        self.config = config
        self.in_worker = config is not None and hasattr(config, "workerinput")
        self.runner_env = os.environ.get(RUNNER_ENV)  # set in a subprocess that runs cells of one environment
        # every process of a run (xdist workers, runners) inherits the controller's id
        self.run_id = os.environ.setdefault(RUN_ID_ENV, uuid.uuid4().hex)
        run_targets = resolve_targets(settings.requests, inventory, settings.catalog)
        self.matrix, commit_targets = _with_resolved_commit_targets(settings.matrix, inventory, settings)
        every_commit_says = bool(self.matrix.commits) and all(c.targets for c in self.matrix.commits)
        if every_commit_says and config is not None and config.getoption("gpubench_gpu") is None:
            run_targets = ()  # the command line asked for nothing beyond what each commit needs
        self.targets: tuple[Target, ...] = tuple(dict.fromkeys((*run_targets, *commit_targets)))
        self.local = LocalExecutor.for_process(config, inventory, settings, self.targets)
        self.envs = EnvironmentCache(settings.env_dir or default_env_dir(), run_id=self.run_id,
                                     rebuild=settings.rebuild_envs)
        self._executors: dict[tuple[str | None, str | None], Executor] = {}
        self.skip_reasons: dict[Target, str] = {}
        for target in self.targets:
            reason = self.local.unmet_reason(target)
            if reason is not None:
                self.skip_reasons[target] = reason
        self.records: list[CellRecord] = []
        self.warmth = DeviceWarmth()  # which devices a cell of this process kept busy a moment ago
        self.cells_seen = 0  # cells reported (run or skipped), so a run that measured none can say so
        self.skipped_cells: dict[str, str] = {}  # nodeid -> why, and failed cells: that run can also say why
        self.failed_cells: set[str] = set()
        self.verdicts: dict[str, Verdict] = {}
        self.summary_written_to: str | None = None

    @classmethod
    def from_config(cls, config: pytest.Config) -> GpubenchSession:
        return cls(load_settings(config), discover_local_inventory(), config)

    @property
    def is_consumer(self) -> bool:
        """Whether this process stores, judges and reports records (the one that owns pytest-benchmark)."""
        return not self.in_worker and self.runner_env is None

    def default_executor(self, choice: ExecutorChoice) -> Executor:
        """In this process, unless the cell's variant brings code of its own: then in a subprocess of its
        environment (and, inside that subprocess, in-process again)."""
        variant = choice.variant
        if variant is None or variant.recipe is None:
            return self.local
        key = (choice.commit.name if choice.commit else None, variant.name)
        if self.runner_env == env_label(choice.commit, variant):
            return self.local
        if key not in self._executors:
            assert self.config is not None
            self._executors[key] = SubprocessExecutor(self.config, self.local, self.envs, env_label(choice.commit, variant),
                                                      variant.recipe)
        return self._executors[key]

    def close_executors(self) -> None:
        for executor in self._executors.values():
            executor.close()

    def machine_info(self) -> dict[str, Any]:
        return self.inventory.as_machine_info()

    @property
    def benchmark_session(self) -> Any:
        assert self.config is not None
        return self.config.pluginmanager.get_plugin(BENCHMARK_PLUGIN_NAME)

    @cached_property
    def baseline(self) -> Baseline | None:
        """Raises BaselineError when the run to compare against is unreadable."""
        runs = self.settings.gate.runs if self.settings.gate is not None else 1
        return load_baseline(self.benchmark_session, runs)

    @cached_property
    def this_machine_info(self) -> dict[str, Any]:
        return dict(self.benchmark_session.get_machine_info())


def env_label(commit: Commit | None, variant: Variant) -> str:
    """A variant environment's name in logs, ids of runner processes and the report: 'c1/agent', 'main'."""
    return f"{commit.name}/{variant.name}" if commit else variant.name


def get_session(config: pytest.Config) -> GpubenchSession:
    session = config.pluginmanager.get_plugin(SESSION_PLUGIN_NAME)
    if not isinstance(session, GpubenchSession):
        raise RuntimeError("pytest-gpubench is not configured in this run")
    return session
