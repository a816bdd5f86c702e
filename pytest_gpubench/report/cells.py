"""One view of the cells of a run for every report (terminal, JUnit, CSV, markdown, plots, HTML): each cell's
figures under the registry's keys, its cost, its group, and the speed-ups of its comparison."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ..metrics import ordered_keys
from ..record import CellRecord, CellResult
from .cost import CellCost, RunCost, cell_cost, run_cost
from .speedup import Comparison, comparisons

GROUP_ORDER = ("kernels", "collectives", "serving", "variants")
SERVING_MARKERS = ("ttft_median_ms", "output_token_throughput", "request_throughput")
COLLECTIVE_MARKERS = ("busbw_gbps", "algbw_gbps")


@dataclass(frozen=True)
class Cell:
    record: CellRecord
    group: str  # kernels | collectives | serving | variants

    @cached_property
    def result(self) -> CellResult:
        return CellResult(self.record)

    @property
    def nodeid(self) -> str:
        return self.record.nodeid

    @property
    def label(self) -> str:
        """The id without its file: 'test_matmul[bf16-H200:1]'."""
        return self.record.nodeid.split("::", 1)[-1]

    @property
    def test(self) -> str:
        return self.record.name.split("[", 1)[0]

    @property
    def target(self) -> str:
        return self.result.target

    @property
    def commit(self) -> str | None:
        commit = self.record.details.get("commit")
        return str(commit) if commit else None

    @property
    def variant(self) -> str | None:
        variant = self.record.details.get("variant")
        return str(variant) if variant else None

    @property
    def flags(self) -> list[str]:
        return self.result.flags

    @cached_property
    def cost(self) -> CellCost:
        return cell_cost(self.record)

    @property
    def metrics(self) -> dict[str, float]:
        """The cell's recorded metrics that are numbers (a saved run writes inf as null)."""
        return {k: float(v) for k, v in self.result.metrics.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)}

    @cached_property
    def values(self) -> dict[str, float]:
        """Every figure of the cell under its registry key: sample statistics, recorded metrics, cost."""
        summary = self.result.summary
        values: dict[str, float] = {
            "median_s": summary.median, "mean_s": summary.mean, "min_s": summary.min, "max_s": summary.max,
            "p90_s": summary.p90, "p95_s": summary.p95, "p99_s": summary.p99, "samples": float(summary.count),
            "loops": float(self.record.loops),
        }
        if math.isfinite(summary.stdrel):
            values["stdrel_pct"] = summary.stdrel * 100
        rounds = self.record.details.get("rounds")
        if isinstance(rounds, int):
            values["rounds"] = float(rounds)
        values.update(self.metrics)
        values.update(self.cost.as_values())
        return values

    @property
    def concurrency(self) -> float | None:
        """Requests in flight: what llm_load recorded, else a test parameter named for it (saved runs)."""
        if "max_concurrency" in self.metrics:
            return self.metrics["max_concurrency"]
        for name, value in self.record.params.items():
            if "concurrency" in name and isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        return None


def group_of(record: CellRecord, in_comparison: bool) -> str:
    metrics = record.details.get("metrics") or {}
    if in_comparison:
        return "variants"
    if any(key in metrics for key in SERVING_MARKERS):
        return "serving"
    if any(key in metrics for key in COLLECTIVE_MARKERS):
        return "collectives"
    return "kernels"


@dataclass(frozen=True)
class RunView:
    """The cells of a run (or of saved runs), grouped, with their comparisons and the run's cost."""

    cells: tuple[Cell, ...]
    comparisons: tuple[Comparison, ...]

    @classmethod
    def of(cls, records: Sequence[CellRecord]) -> RunView:
        found = tuple(comparisons(records))
        compared = {c.baseline_nodeid for c in found} | {v.nodeid for c in found for v in c.variants}
        return cls(tuple(Cell(r, group_of(r, r.nodeid in compared)) for r in records), found)

    def group(self, name: str) -> list[Cell]:
        return [c for c in self.cells if c.group == name]

    @property
    def groups(self) -> list[tuple[str, list[Cell]]]:
        return [(name, cells) for name in GROUP_ORDER if (cells := self.group(name))]

    @cached_property
    def cost(self) -> RunCost:
        return run_cost(c.cost for c in self.cells)

    def metric_keys(self) -> list[str]:
        """Every key any cell has a value for, in the registry's order."""
        return ordered_keys({key for cell in self.cells for key in cell.values})

    def by_nodeid(self) -> dict[str, Cell]:
        return {c.nodeid: c for c in self.cells}


def number(value: float | None) -> str:
    """Four significant figures without exponents for the sizes reports meet; '-' when there is none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.1f}"
    if size >= 10:
        return f"{value:.2f}"
    if size >= 1:
        return f"{value:.3f}"
    return f"{value:.3g}" if size else "0"


def usd(value: float | None) -> str:
    if value is None:
        return "-"
    return f"${value:,.2f}" if value >= 1 else f"${value:.3g}"


TIME_UNITS = (("ns", 1e-9), ("us", 1e-6), ("ms", 1e-3), ("s", 1.0))


def time_unit(values_s: Sequence[float]) -> tuple[str, float]:
    """The unit one group's times are shown in: the smallest that keeps the largest under 1,000 of it (a group
    of 4 us and 1.6 ms kernels reads 0.0041 and 1.600 ms)."""
    finite = [v for v in values_s if math.isfinite(v)]
    largest = max(finite, default=0.0)
    for name, scale in TIME_UNITS:
        if largest / scale < 1000:
            return name, scale
    return TIME_UNITS[-1]


def details_json(cell: Cell) -> dict[str, Any]:
    return {"cost": cell.cost.as_json(), "group": cell.group}
