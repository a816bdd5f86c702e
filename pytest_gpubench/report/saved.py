"""Saved pytest-benchmark runs (``--benchmark-json``, ``--benchmark-save``) read back as cell records, so a
report can be made from files long after the run, on a machine without its GPUs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..record import GPUBENCH_KEY, CellRecord


class SavedRunError(ValueError):
    """A file that is not a saved pytest-benchmark run; the message names it and says what is wrong."""


@dataclass(frozen=True)
class SavedRun:
    path: Path
    records: tuple[CellRecord, ...]
    datetime: str = ""
    machine_info: dict[str, Any] = field(default_factory=dict)
    commit_info: dict[str, Any] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()  # gpubench cells saved without their samples


def record_from_saved(entry: dict[str, Any]) -> CellRecord | None:
    """A gpubench cell as its producer made it, from its saved benchmark; None for a benchmark that is not a
    gpubench cell or was saved without its samples. pytest-benchmark saves per-call times (``stats.data``,
    each a sample's total divided by ``iterations``): multiplied back, they are the record's totals."""
    extra = entry.get("extra_info") or {}
    details = extra.get(GPUBENCH_KEY)
    stats = entry.get("stats") or {}
    data = stats.get("data") or []
    if not isinstance(details, dict) or not data:
        return None
    loops = int(stats.get("iterations") or details.get("loops") or 1)
    return CellRecord(
        nodeid=str(entry["fullname"]),
        name=str(entry.get("name") or entry["fullname"].split("::")[-1]),
        group=entry.get("group"),
        param=entry.get("param"),
        params=dict(entry.get("params") or {}),
        totals_s=tuple(float(x) * loops for x in data),
        loops=loops,
        timer=str(details.get("timer") or (entry.get("options") or {}).get("timer") or "?"),
        extra_info=dict(extra),
        host=dict(details.get("host") or {}),
        phases_s={k: float(v) for k, v in (details.get("phases_s") or {}).items()},
    )


def read_saved_run(path: Path) -> SavedRun:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise SavedRunError(f"{path}: cannot read it ({error.strerror or error})") from None
    except ValueError as error:
        raise SavedRunError(f"{path}: not JSON ({error})") from None
    if not isinstance(document, dict) or not isinstance(document.get("benchmarks"), list):
        raise SavedRunError(f"{path}: not a pytest-benchmark run (no 'benchmarks' list); give a file written by "
                            "--benchmark-json or --benchmark-save")
    records, skipped = [], []
    for entry in document["benchmarks"]:
        if not isinstance(entry, dict) or "fullname" not in entry:
            raise SavedRunError(f"{path}: a benchmark without a 'fullname'")
        record = record_from_saved(entry)
        if record is not None:
            records.append(record)
        elif GPUBENCH_KEY in (entry.get("extra_info") or {}):
            skipped.append(str(entry["fullname"]))
    return SavedRun(path, tuple(records), str(document.get("datetime") or ""),
                    dict(document.get("machine_info") or {}), dict(document.get("commit_info") or {}), tuple(skipped))


def records_of(runs: list[SavedRun]) -> list[CellRecord]:
    """Every cell of several saved runs; a cell saved twice is taken from the last file that has it."""
    by_id: dict[str, CellRecord] = {}
    for run in runs:
        for record in run.records:
            by_id[record.nodeid] = record
    return list(by_id.values())
