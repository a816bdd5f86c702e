"""What each cell cost: the GPU time it held × the target's price, and for cells that produce tokens, what
1,000 tokens cost at the throughput it measured.

GPU time, best evidence first:

- a Modal cell: the seconds its container ran × its GPUs, as the executor recorded them (``modal.gpu_seconds``,
  ``modal.cost_usd``), which is what Modal bills;
- a cell that ran here: its setup, call and teardown (``phases_s``) × the target's GPUs: the time the cell kept
  its GPUs from any other work, warm-up and server start included;
- a saved run from before phases were recorded: the time the cell held its GPU lock (``gpus_held_from`` to
  ``gpus_held_until_at_least``), which misses the teardown.

The price is the one the cell recorded (``usd_per_hour``: the catalog's list price per GPU-hour, or
``[tool.gpubench.prices]``, × the target's GPUs). CPU cells have no price and no cost.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ..record import CellRecord

PHASES = ("setup_s", "call_s", "teardown_s")
TOKEN_RATES = ("output_token_throughput", "tokens_per_s")  # serving cells, then generation cells


@dataclass(frozen=True)
class CellCost:
    gpu_seconds: float | None
    usd: float | None
    usd_per_hour: float | None
    usd_per_1k_tokens: float | None
    basis: str  # where gpu_seconds came from; "" when there is none

    def as_values(self) -> dict[str, float]:
        """The registry's cost metrics this cell has (gpu_seconds, usd_per_hour, cost_usd, usd_per_1k_tokens)."""
        values = {"gpu_seconds": self.gpu_seconds, "usd_per_hour": self.usd_per_hour, "cost_usd": self.usd,
                  "usd_per_1k_tokens": self.usd_per_1k_tokens}
        return {key: value for key, value in values.items() if value is not None}

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def gpu_count(target: str) -> int:
    """GPUs of a target id: 'H200:4' -> 4, 'A100-80GB' -> 1, 'cpu' -> 0."""
    if target in ("cpu", "?", ""):
        return 0
    _, _, count = target.partition(":")
    return int(count) if count.isdigit() else 1


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _held_seconds(record: CellRecord, details: Mapping[str, Any]) -> tuple[float | None, str]:
    phases = record.phases_s or details.get("phases_s") or {}
    if any(key in phases for key in PHASES):
        return sum(float(phases.get(key, 0.0)) for key in PHASES), "setup + call + teardown"
    start, end = _float(details.get("gpus_held_from")), _float(details.get("gpus_held_until_at_least"))
    if start is not None and end is not None and end >= start:
        return end - start, "GPU lock held (no teardown)"
    return None, ""


def cell_cost(record: CellRecord) -> CellCost:
    details = record.details
    price = _float(details.get("usd_per_hour"))
    metrics = details.get("metrics") or {}
    rate = next((r for key in TOKEN_RATES if (r := _float(metrics.get(key))) is not None and r > 0), None)
    per_1k = price / 3600 / rate * 1000 if price is not None and rate is not None else None
    modal = details.get("modal") or {}
    if _float(modal.get("gpu_seconds")) is not None:
        return CellCost(_float(modal["gpu_seconds"]), _float(modal.get("cost_usd")), price, per_1k, "Modal container")
    gpus = gpu_count(str(details.get("target", "")))
    seconds, basis = _held_seconds(record, details)
    if gpus == 0 or seconds is None:
        return CellCost(None, None, price, per_1k, "")
    usd = seconds * price / 3600 if price is not None else None
    return CellCost(seconds * gpus, usd, price, per_1k, basis)


@dataclass(frozen=True)
class RunCost:
    usd: float | None  # None when no cell has a price
    gpu_seconds: float
    cells_priced: int
    bases: tuple[str, ...]

    def describe(self) -> str:
        if self.usd is None:
            return ""
        return (f"${self.usd:.2f} for {self.gpu_seconds:,.0f} GPU-seconds over {self.cells_priced} "
                f"cell{'s' if self.cells_priced != 1 else ''} (GPU time: {', '.join(self.bases)}; x the price per "
                "GPU-hour)")

    def as_json(self) -> dict[str, Any]:
        return {"total_usd": self.usd, "gpu_seconds": self.gpu_seconds, "cells_priced": self.cells_priced,
                "basis": list(self.bases)}


def run_cost(costs: Iterable[CellCost]) -> RunCost:
    priced = [c for c in costs if c.usd is not None]
    bases = tuple(dict.fromkeys(c.basis for c in priced))
    return RunCost(sum(c.usd for c in priced if c.usd is not None) if priced else None,
                   sum(c.gpu_seconds or 0.0 for c in priced), len(priced), bases)


def add_costs_to_saved_json(records: Iterable[CellRecord], output_json: dict[str, Any]) -> None:
    """Each saved gpubench cell gets ``extra_info.gpubench.cost``; the run gets ``gpubench.cost`` (its total)
    when any cell has a price."""
    costs = {record.nodeid: cell_cost(record) for record in records}
    for entry in output_json.get("benchmarks", []):
        cost = costs.get(entry.get("fullname"))
        details = (entry.get("extra_info") or {}).get("gpubench")
        if cost is not None and isinstance(details, dict):
            details["cost"] = cost.as_json()
    total = run_cost(costs.values())
    if total.usd is not None:
        output_json.setdefault("gpubench", {})["cost"] = total.as_json()
