"""The per-run state every stage reads: validated settings, this host's GPUs, the targets, the results."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from .hardware import LocalInventory, Target, discover_local_inventory, resolve_targets, unmet_reason
from .measure.stats import Summary
from .options import Settings, load_settings

SESSION_PLUGIN_NAME = "gpubench-session"


@dataclass(frozen=True)
class CellResult:
    """What one cell measured, as the terminal summary shows it."""

    nodeid: str
    target: str
    summary: Summary
    timer: str
    cache: str
    loops: int
    stop_reason: str
    metrics: Mapping[str, float] = field(default_factory=dict)


class GpubenchSession:
    def __init__(self, settings: Settings, inventory: LocalInventory) -> None:
        self.settings = settings
        self.inventory = inventory
        self.targets: tuple[Target, ...] = resolve_targets(settings.requests, inventory, settings.catalog)
        self.skip_reasons: dict[Target, str] = {}
        for target in self.targets:
            reason = unmet_reason(target, inventory, settings.catalog)
            if reason is not None:
                self.skip_reasons[target] = reason
        self.results: list[CellResult] = []

    @classmethod
    def from_config(cls, config: pytest.Config) -> GpubenchSession:
        settings = load_settings(config)
        return cls(settings, discover_local_inventory())

    def machine_info(self) -> dict[str, Any]:
        return self.inventory.as_machine_info()


def get_session(config: pytest.Config) -> GpubenchSession:
    session = config.pluginmanager.get_plugin(SESSION_PLUGIN_NAME)
    if not isinstance(session, GpubenchSession):
        raise RuntimeError("pytest-gpubench is not configured in this run")
    return session
