"""JUnit XML: each cell's figures as <property> elements, and a failed cell's server logs in <system-out> and
<system-err>.

Properties: ``gpubench.<registry key>`` for every figure the cell has (median_s, p99_s, stdrel_pct, tflops,
ttft_p99_ms, output_token_throughput, cost_usd...), values in the registry's unit. junitxml reads a testcase's
properties from the report that closes it (the teardown's, or a failed call's when the teardown fails too),
so the consumer (ingest.py) puts them on both.

Server logs: pytest's junitxml writes a report's captured output only under ``junit_logging`` (default "no")
and only from sections titled "Captured stdout/stderr", so the server logs a failed cell carries (sections
"gpubench server 'NAME' log PATH", from serving/fixture.py) would never reach the XML. They are added here,
whatever ``junit_logging`` says: each server's stdout log in <system-out>, its stderr log in <system-err>,
whole up to LOG_LINES lines, else its last LOG_LINES lines after a line naming the whole log's path.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from ..metrics import ordered_keys, unit_of
from ..record import CellRecord
from .cells import Cell, group_of

PROPERTY_PREFIX = "gpubench."
LOG_LINES = 2000
SERVER_LOG_SECTION = re.compile(r"^gpubench server '(?P<name>.*)' log (?P<path>.+)$")


def _value(key: str, value: float) -> str:
    if math.isfinite(value) and not unit_of(key) and float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def cell_properties(record: CellRecord) -> list[tuple[str, str]]:
    """(name, value) of every figure of the cell, in the registry's order."""
    cell = Cell(record, group_of(record, in_comparison=False))
    values = cell.values
    return [(PROPERTY_PREFIX + key, _value(key, values[key])) for key in ordered_keys(set(values))]


@dataclass(frozen=True)
class ServerLog:
    server: str
    path: str
    text: str

    @property
    def tag(self) -> str:
        return "system-out" if self.path.endswith(".stdout.log") else "system-err"

    def for_xml(self) -> str:
        lines = self.text.splitlines()
        if len(lines) <= LOG_LINES:
            return f"==== server {self.server!r}: {self.path} ====\n{self.text}"
        tail = "\n".join(lines[-LOG_LINES:])
        return (f"==== server {self.server!r}: the last {LOG_LINES} of {len(lines)} lines; the whole log is "
                f"{self.path} ====\n{tail}\n")


def server_logs(report: pytest.TestReport) -> list[ServerLog]:
    logs = []
    for title, text in report.sections:
        match = SERVER_LOG_SECTION.match(title)
        if match:
            logs.append(ServerLog(match["name"], match["path"], text))
    return logs


def _log_xml(config: pytest.Config) -> Any:
    """junitxml's LogXML of this run, None without --junitxml (or in an xdist worker, which writes none)."""
    from _pytest.junitxml import xml_key  # pytest has no public way to the JUnit XML being written

    return config.stash.get(xml_key, None)


def add_server_logs(config: pytest.Config, report: pytest.TestReport) -> None:
    xml = _log_xml(config)
    logs = server_logs(report)
    if xml is None or not logs:
        return
    from _pytest.junitxml import bin_xml_escape  # server logs hold ANSI colours: XML 1.0 forbids those characters

    reporter = xml.node_reporter(report)
    for tag in ("system-out", "system-err"):
        chosen: Sequence[ServerLog] = [log for log in logs if log.tag == tag]
        if chosen:
            element = ET.Element(tag)
            element.text = bin_xml_escape("".join(log.for_xml() for log in chosen))
            reporter.append(element)


class JunitServerLogs:
    """A failed setup or call: after junitxml wrote its <failure> or <error>, so the logs follow it."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.failed and report.when in ("setup", "call"):
            add_server_logs(self.config, report)


class JunitTeardownServerLogs:
    """A failed teardown (a server that died while the cell ran): junitxml closes the testcase while handling
    the teardown report, so the logs go in first, before its <error>."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.failed and report.when == "teardown":
            add_server_logs(self.config, report)


def register_junit(config: pytest.Config) -> None:
    config.pluginmanager.register(JunitServerLogs(config), "gpubench-junit-server-logs")
    config.pluginmanager.register(JunitTeardownServerLogs(config), "gpubench-junit-teardown-server-logs")
