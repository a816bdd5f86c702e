"""The consumer: in the process that owns pytest-benchmark, each cell's record — measured here, in an
xdist worker, in another environment or in a container — is stored, judged by the gate, and turns into
the test's outcome. The record arrives on the call report, so a worker or runner that dies later loses
nothing that was already reported."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from .baseline import Baseline
from .gate import History, Verdict, judge
from .matrix import TARGET_PARAM
from .record import GPUBENCH_KEY, CellRecord, RecordVersionError, store_in_benchmark_session
from .report.junit import cell_properties
from .reports import record_of
from .session import GpubenchSession


def is_cell(report: pytest.TestReport) -> bool:
    return any(name == TARGET_PARAM for name, _ in report.user_properties)


@dataclass(frozen=True)
class _Crash:
    path: str
    lineno: int
    message: str


class FailureText:
    """A failure's text as pytest's reporters read a longrepr: written whole, its first line in the short
    summary (``reprcrash``, which pytest 8 needs for a plain-text failure) and in JUnit XML's message."""

    def __init__(self, text: str, location: tuple[str, int | None, str]) -> None:
        self.text = text
        self.reprcrash = _Crash(location[0], (location[1] or 0) + 1, text.splitlines()[0] if text else "")

    def toterminal(self, out: Any) -> None:
        for line in self.text.splitlines():
            out.line(line)

    def __str__(self) -> str:
        return self.text


def fail_report(report: pytest.TestReport, message: str) -> None:
    """Turn a passed call into a failure with ``message``, before the terminal and JUnit XML see it."""
    report.outcome = "failed"
    report.longrepr = FailureText(message, report.location)  # type: ignore[assignment]


def ingest(session: GpubenchSession, report: pytest.TestReport) -> None:
    if report.when == "setup" and is_cell(report):
        session.cells_seen += 1
    if is_cell(report):
        if report.skipped and report.when != "teardown":
            session.skipped_cells[report.nodeid] = skip_reason(report)
        elif report.failed:
            session.failed_cells.add(report.nodeid)
    if report.when == "call":
        try:
            record = record_of(report)
        except RecordVersionError as error:
            fail_report(report, f"{report.nodeid}: {error}")
            record = None
        if record is not None:
            session.records.append(record)
            store_in_benchmark_session(session.benchmark_session, record)
            report.user_properties.extend(cell_properties(record))
            if report.passed:
                verdict = judge_cell(session, record)
                if verdict is not None and verdict.failed:
                    fail_report(report, f"gpubench gate: {report.nodeid} {verdict.describe()}")
    if report.when == "teardown" and is_cell(report):
        # JUnit XML takes a testcase's properties from the report that closes it: the teardown's
        record = next((r for r in reversed(session.records) if r.nodeid == report.nodeid), None)
        if record is not None:
            report.user_properties.extend(cell_properties(record))
    if report.failed and is_cell(report):
        note_failed_cell(session, report.nodeid)


def _cpu_brand(machine_info: dict[str, Any]) -> object:
    return (machine_info.get("cpu") or {}).get("brand_raw")


def different_hardware(session: GpubenchSession, record: CellRecord, baseline: Baseline) -> str | None:
    """Why a verdict against ``baseline`` would compare two machines, or None when it would not. A cell's
    GPU is the one its record says it ran on (a container's, a worker's), not this process's."""
    if not baseline.machine_info:
        return None
    if record.details.get("target") == "cpu":
        old, new = _cpu_brand(baseline.machine_info), _cpu_brand(session.this_machine_info)
    else:
        old = (baseline.machine_info.get("gpu") or {}).get("name")
        new = (record.host.get("gpu") or {}).get("name")
    return None if old == new else f"baseline measured on {old}, this run on {new}"


def history_of(nodeid: str, baseline: Baseline) -> History:
    """The cell in every saved run the gate reads, newest first (the baseline has it; earlier runs may not)."""
    labels: list[str] = []
    run_medians: list[float] = []
    round_medians: list[float] = []
    for label, benchmarks in ((baseline.label, baseline.benchmarks), *((r.label, r.benchmarks) for r in baseline.earlier)):
        bench = benchmarks.get(nodeid)
        if bench is None:
            continue
        stats = bench.get("stats", {})
        data = stats.get("data") or []
        median = float(np.median(data)) if data else float(stats.get("median", 0.0))
        labels.append(label)
        run_medians.append(median)
        rounds = ((bench.get("extra_info") or {}).get(GPUBENCH_KEY) or {}).get("round_medians_s") or [median]
        round_medians.extend(float(x) for x in rounds)
    newest = baseline.benchmarks[nodeid].get("stats", {}).get("data") or []
    return History(tuple(labels), tuple(run_medians), tuple(round_medians), tuple(float(x) for x in newest))


def judge_cell(session: GpubenchSession, record: CellRecord) -> Verdict | None:
    """The gate's verdict on a cell; None when no gate was asked for."""
    policy = session.settings.gate
    if policy is None:
        return None
    baseline = session.baseline
    if baseline is None:
        verdict = Verdict(record.nodeid, "no-baseline", note="--benchmark-compare found no saved run")
    elif (reason := different_hardware(session, record, baseline)) is not None:
        verdict = Verdict(record.nodeid, "different-hardware", baseline=baseline.label, note=reason)
    elif record.nodeid not in baseline.benchmarks:
        verdict = Verdict(record.nodeid, "new", baseline=baseline.label, note=f"not in {baseline.label}")
    else:
        rounds = [float(x) for x in record.details.get("round_medians_s", [])]
        resolution = float(record.details.get("timer_resolution_s") or 0.0) / record.loops
        verdict = judge(record.nodeid, record.samples_s, rounds, history_of(record.nodeid, baseline), policy, resolution)
    session.verdicts[record.nodeid] = verdict
    return verdict


def note_failed_cell(session: GpubenchSession, nodeid: str) -> None:
    """A cell that fails for its own reasons (not the gate's) still gets a line in the gate's summary."""
    if session.settings.gate is None or (nodeid in session.verdicts and session.verdicts[nodeid].failed):
        return
    baseline = session.baseline
    had_it = baseline is not None and nodeid in baseline.benchmarks
    note = f"new failure: {baseline.label} has this cell" if had_it and baseline else "failed; not in the baseline"
    session.verdicts[nodeid] = Verdict(nodeid, "failed", baseline=baseline.label if baseline else None, note=note)


def skip_reason(report: pytest.TestReport) -> str:
    """A skipped report's reason as ``-rs`` shows it ("needs 8× H100; this host has no GPU")."""
    longrepr = report.longrepr
    text = str(longrepr[2]) if isinstance(longrepr, (tuple, list)) and len(longrepr) == 3 else str(longrepr)
    return text.removeprefix("Skipped: ")


def nothing_measured(session: GpubenchSession) -> str | None:
    """One line when cells ran (or were skipped) but none was measured, e.g. every target skipped on a host
    without the GPU: under the gate that must not read as a pass. It says why, as a ``-q`` run shows only
    its s's: the commonest skip reason, and how many failed or recorded nothing."""
    if not session.cells_seen or session.records:
        return None
    parts = []
    reasons = Counter(session.skipped_cells.values())
    if reasons:
        reason, count = reasons.most_common(1)[0]
        others = len(session.skipped_cells) - count
        rest = f"; {others} for other reasons, -rs lists them" if others else ""
        parts.append(f"{len(session.skipped_cells)} skipped ({reason}{rest})")
    failed = session.failed_cells - set(session.skipped_cells)
    if failed:
        parts.append(f"{len(failed)} failed")
    silent = session.cells_seen - len(session.skipped_cells) - len(failed)
    if silent > 0:
        parts.append(f"{silent} ran without recording a figure")
    return f"gpubench: 0 of {session.cells_seen} cells measured: {', '.join(parts)}"


def note_missing_cells(session: GpubenchSession) -> None:
    baseline = session.baseline
    if session.settings.gate is None or baseline is None:
        return
    for nodeid, bench in baseline.benchmarks.items():
        if GPUBENCH_KEY in (bench.get("extra_info") or {}) and nodeid not in session.verdicts:
            session.verdicts[nodeid] = Verdict(nodeid, "missing", baseline=baseline.label,
                                               note=f"in {baseline.label} but not run now")
