"""JUnit XML: every cell's figures as properties, and a failed server cell's logs in <system-out> and
<system-err> (whole, or their last lines and the whole log's path when long), whatever junit_logging says."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pytest_gpubench.report.junit import LOG_LINES

FAKE_SERVER = Path(__file__).parent / "servers" / "fake_openai_server.py"

CELLS = """
import os
import sys

FAKE = os.environ["FAKE_SERVER"]


def test_measured(gpubench):
    gpubench.record([0.010, 0.011, 0.012, 0.010, 0.011, 0.010, 0.011, 0.012, 0.010, 0.011], items=100,
                    metrics={"ttft_p99_ms": 12.5, "output_token_throughput": 250.0, "my_own_figure": 3.0})


def test_noisy_server(gpubench, llm_server):
    llm_server("command", argv=[sys.executable, FAKE, "--port", "{port}", "--stderr-lines", "5000", "--exit", "1"],
               ready_timeout_s=30, grace_s=2)


def test_quiet_server(gpubench, llm_server):
    llm_server("command", argv=[sys.executable, FAKE, "--port", "{port}", "--stderr-lines", "3", "--exit", "1"],
               ready_timeout_s=30, grace_s=2)
"""


def cases_of(path: Path) -> dict[str, ET.Element]:
    return {case.get("name", ""): case for case in ET.parse(path).getroot().iter("testcase")}


def properties(case: ET.Element) -> dict[str, str]:
    return {p.get("name", ""): p.get("value", "") for p in case.iter("property")}


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "xdist"])
def test_properties_and_server_logs_in_junit_xml(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                                  workers: list[str]) -> None:
    monkeypatch.setenv("FAKE_SERVER", str(FAKE_SERVER))
    pytester.makepyfile(test_cells=CELLS)
    result = pytester.runpytest("--gpu=cpu", "-p", "no:cacheprovider", "--junitxml=junit.xml", "--gpubench-report=no",
                                *workers)
    result.assert_outcomes(passed=1, failed=2)
    cases = cases_of(pytester.path / "junit.xml")

    measured = properties(cases["test_measured[cpu]"])
    assert measured["gpubench_target"] == "cpu"
    assert float(measured["gpubench.median_s"]) == pytest.approx(0.011)
    assert float(measured["gpubench.p99_s"]) == pytest.approx(0.012, rel=0.01)
    assert measured["gpubench.samples"] == "10"
    assert float(measured["gpubench.items_per_s"]) == pytest.approx(100 / 0.011)
    assert float(measured["gpubench.ttft_p99_ms"]) == 12.5
    assert float(measured["gpubench.output_token_throughput"]) == 250.0
    assert float(measured["gpubench.my_own_figure"]) == 3.0  # a user's own metric too
    assert "gpubench.cost_usd" not in measured  # a CPU cell has no price

    noisy = cases["test_noisy_server[cpu]"]
    assert noisy.find("failure") is not None
    (err,) = noisy.findall("system-err")
    text = err.text or ""
    lines = text.splitlines()
    # 5000 lines are too many for a CI page: the last LOG_LINES, after a line naming the whole log
    assert lines[0].startswith(f"==== server 'command': the last {LOG_LINES} of 5000 lines; the whole log is ")
    assert lines[0].endswith("command.stderr.log ====")
    whole_log = Path(lines[0].split("the whole log is ", 1)[1].removesuffix(" ===="))
    assert whole_log.read_text().count("\n") == 5000
    assert lines[1] == f"stderr line {5000 - LOG_LINES + 1} of 5000" and lines[-1] == "stderr line 5000 of 5000"
    (out,) = noisy.findall("system-out")
    assert "fake server starting on port" in (out.text or "")
    children = [child.tag for child in noisy]
    assert children.index("failure") < children.index("system-out") < children.index("system-err")

    quiet = cases["test_quiet_server[cpu]"]
    (err,) = quiet.findall("system-err")
    assert (err.text or "").splitlines()[1:] == ["stderr line 1 of 3", "stderr line 2 of 3", "stderr line 3 of 3"]


def test_a_server_that_dies_mid_run_has_its_stderr_in_junit_xml(pytester: pytest.Pytester,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Found at teardown: junitxml closes the testcase while handling that report, and the logs are in it."""
    monkeypatch.setenv("FAKE_SERVER", str(FAKE_SERVER))
    pytester.makepyfile(test_crash="""
        import os
        import sys
        import time

        def test_crash(gpubench, llm_server):
            llm_server("command", argv=[sys.executable, os.environ["FAKE_SERVER"], "--port", "{port}",
                                        "--crash-after", "0.5"], ready_timeout_s=30, grace_s=2)
            time.sleep(2)
    """)
    result = pytester.runpytest("--gpu=cpu", "-p", "no:cacheprovider", "--junitxml=junit.xml", "--gpubench-report=no")
    result.assert_outcomes(passed=1, errors=1)
    case = cases_of(pytester.path / "junit.xml")["test_crash[cpu]"]
    assert case.find("error") is not None
    (err,) = case.findall("system-err")
    assert "Fatal Python error: Segmentation fault (simulated)" in (err.text or "")
