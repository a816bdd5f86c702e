"""pytest's reports as the carriers of cells: the record on the call report, several rounds made one, and
reports for cells that failed before pytest could run them (an environment that did not build, a runner
that crashed)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import pytest

from .record import REPORT_ATTRIBUTE, CellRecord, merge_rounds


def log_dir_for(config: pytest.Config, nodeid: str) -> Path:
    """Where a cell's full logs go (servers', runners'): the paths its failed reports name."""
    safe = re.sub(r"[^A-Za-z0-9_.\-\[\]:]+", "_", nodeid).replace("::", "--").replace(":", "_")
    return Path(config.rootpath) / "gpubench-logs" / safe


def record_of(report: pytest.TestReport) -> CellRecord | None:
    raw = getattr(report, REPORT_ATTRIBUTE, None)
    return CellRecord.from_json(raw) if raw else None


def attach(report: pytest.TestReport, record: CellRecord) -> None:
    setattr(report, REPORT_ATTRIBUTE, record.to_json())


def phase_times(reports: Sequence[pytest.TestReport]) -> dict[str, float]:
    return {f"{r.when}_s": float(r.duration) for r in reports if r.when in ("setup", "call", "teardown")}


def merge_round_reports(rounds: Sequence[Sequence[pytest.TestReport]],
                        extra_phases: dict[str, float] | None = None) -> list[pytest.TestReport]:
    """The reports to log for a cell measured in ``rounds``: the first round that did not pass (a failure
    in any round fails the cell), else the last round's, with every round's record merged into its call
    report and the phases' times added up."""
    chosen_index = next((i for i, reports in enumerate(rounds) if any(not r.passed and not r.skipped for r in reports)),
                        len(rounds) - 1)
    chosen = list(rounds[chosen_index])
    records: list[CellRecord] = []
    phases: dict[str, float] = dict(extra_phases or {})
    for reports in rounds:
        for key, value in phase_times(reports).items():
            phases[key] = phases.get(key, 0.0) + value
        records.extend(rec for rec in (record_of(r) for r in reports if r.when == "call") if rec is not None)
    call = next((r for r in chosen if r.when == "call"), None)
    if call is not None and records:
        merged = merge_rounds(records)
        attach(call, _with_phases(merged, phases))
    if len(rounds) > 1 and chosen_index < len(rounds) - 1:
        for report in chosen:
            if report.failed:
                report.sections.append(("gpubench", f"failed in round {chosen_index + 1} of {len(rounds)}"))
    return chosen


def _with_phases(record: CellRecord, phases: dict[str, float]) -> CellRecord:
    return replace(record, phases_s={**record.phases_s, **phases})


def failure_reports(item: pytest.Item, when: Literal["setup", "call", "teardown"], message: str, sections: Sequence[tuple[str, str]] = (),
                    duration: float = 0.0) -> list[pytest.TestReport]:
    """Reports for a cell that failed at ``when`` ('setup', 'call' or 'teardown') outside pytest's own
    protocol, shaped as pytest shapes them (no call after a failed setup): ``message`` is what a user
    reads first; ``sections`` hold the full logs."""
    common: dict[str, Any] = dict(nodeid=item.nodeid, location=item.location,
                                  keywords={k: 1 for k in item.keywords}, user_properties=list(item.user_properties))
    phases: tuple[Literal["setup", "call", "teardown"], ...] = (
        ("setup", "teardown") if when == "setup" else ("setup", "call", "teardown"))
    reports = []
    for phase in phases:
        failed = phase == when
        reports.append(pytest.TestReport(
            outcome="failed" if failed else "passed", longrepr=message if failed else None, when=phase,
            sections=list(sections) if failed else [], duration=duration if failed else 0.0,
            start=0.0, stop=duration if failed else 0.0, **common,
        ))
    return reports
