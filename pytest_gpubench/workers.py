"""The xdist side: what a worker sends (its cells' raw samples and verdicts) and how the controller merges
it into one pytest-benchmark run. pytest-benchmark switches itself off under xdist, so without this a
parallel run measures nothing, saves nothing and its gate passes silently."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .gate import Verdict
from .record import CellRecord, add_to_benchmark_session
from .session import GpubenchSession

WORKEROUTPUT_KEY = "gpubench"


def is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def worker_payload(session: GpubenchSession) -> str:
    return json.dumps({
        "records": [record.to_json() for record in session.records],
        "verdicts": [verdict.as_dict() for verdict in session.verdicts.values()],
    })


def merge_worker_payload(session: GpubenchSession, payload: str) -> None:
    data: dict[str, Any] = json.loads(payload)
    benchmark_session = session.benchmark_session
    for raw in data.get("records", []):
        record = CellRecord.from_json(raw)
        session.records.append(record)
        add_to_benchmark_session(benchmark_session, record)
    for raw in data.get("verdicts", []):
        verdict = Verdict.from_dict(raw)
        session.verdicts[verdict.fullname] = verdict  # the worker's word beats "failed" seen in its report
    if data.get("records"):
        # pytest-benchmark would otherwise end the run saying benchmarks were disabled under xdist
        benchmark_session.xdist_benchmark_found = False
