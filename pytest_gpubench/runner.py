"""``python -m pytest_gpubench.runner OUT -- [pytest args] NODEID``: run test items in this interpreter
(another environment, another checkout, a container) and write their reports to OUT as JSON lines.

Each report is written and flushed the moment pytest makes it, so a runner that crashes mid-cell leaves
every report it had made; the call report carries the cell's record. Nothing is stored or judged here:
the process that started the runner ingests the records.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import IO, Any

import pytest


class ReportWriter:
    """A pytest plugin that appends every test report, and every collection error, to a JSON-lines file."""

    def __init__(self, out: IO[str], config_holder: list[pytest.Config]) -> None:
        self._out = out
        self._config_holder = config_holder

    def _write(self, entry: dict[str, Any]) -> None:
        self._out.write(json.dumps(entry) + "\n")
        self._out.flush()
        os.fsync(self._out.fileno())

    @pytest.hookimpl
    def pytest_configure(self, config: pytest.Config) -> None:
        self._config_holder.append(config)

    @pytest.hookimpl
    def pytest_runtest_logstart(self, nodeid: str) -> None:
        # a runner that dies mid-cell has reported nothing yet: this says the cell was found and started
        self._write({"kind": "start", "nodeid": nodeid})

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        config = self._config_holder[0]
        data = config.hook.pytest_report_to_serializable(config=config, report=report)
        self._write({"kind": "report", "data": data})

    @pytest.hookimpl
    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self._write({"kind": "collect_error", "nodeid": report.nodeid, "text": report.longreprtext})


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] != "--":
        print("usage: python -m pytest_gpubench.runner OUT -- [pytest args] NODEID...", file=sys.stderr)
        return 4
    out_path = Path(argv[0])
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "a", encoding="utf-8") as out:
        return int(pytest.main(argv[2:], plugins=[ReportWriter(out, [])]))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
