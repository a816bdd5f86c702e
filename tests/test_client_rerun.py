"""llm_load(client_bound="rerun"): a load the self-check calls client-bound is sent again with more client
processes, announced as it starts and named in the warnings summary; the cell keeps the last run. And the
serving suite's concurrency sweep per target."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

STREAM_SERVER = Path(__file__).parent / "servers" / "stream_server.py"
SUITE = Path(__file__).resolve().parent.parent / "bench_suites" / "test_serving.py"

# The self-check's verdict is the one thing stood in for: a real client-bound run needs more streams than a
# loaded 2-core machine can serve reliably. Everything else (server, streams, processes) is real.
CELL = """
import os
import sys
from dataclasses import replace

from pytest_gpubench.serving import fixture


def test_serve(llm_server, llm_load, gpubench, monkeypatch):
    real = fixture.self_check

    def overloaded_below(outcome, processes=1):
        check = real(outcome, processes)
        bound = processes < {enough}
        return replace(check, client_bound=bound,
                       warning=f"stand-in: {{processes}} process(es) could not keep up" if bound else "")

    monkeypatch.setattr(fixture, "self_check", overloaded_below)
    server = llm_server("command", argv=[sys.executable, os.environ["STREAM_SERVER"], "--port", "{{port}}"])
    report = llm_load(server, ["hello"], num_requests=8, max_tokens=4, max_concurrency=4, client_bound="rerun",
                      max_processes=2)
    assert report.metrics.completed == 8
"""


def run_cell(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, enough: int) -> tuple[pytest.RunResult, dict]:
    monkeypatch.setenv("STREAM_SERVER", str(STREAM_SERVER))
    pytester.makepyfile(test_serve=CELL.format(enough=enough))
    result = pytester.runpytest("--gpu=cpu", "-p", "no:cacheprovider", "--benchmark-json=out.json",
                                "--gpubench-report=no")
    result.assert_outcomes(passed=1)
    (bench,) = json.loads((pytester.path / "out.json").read_text())["benchmarks"]
    return result, bench


def test_a_client_bound_load_is_sent_again_with_more_processes_and_says_so(pytester: pytest.Pytester,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    result, bench = run_cell(pytester, monkeypatch, enough=2)
    # announced live, while the cell runs
    result.stdout.fnmatch_lines(["[[]gpubench[]] test_serve.py::test_serve[[]cpu[]]: client-bound with 1 client "
                                 "process(es): stand-in: 1 process(es) could not keep up; sending the load again "
                                 "with processes=2"])
    # and named in the warnings summary, under the cell's id
    result.stdout.fnmatch_lines(["*test_serve.py::test_serve[[]cpu[]]*", "*ClientRerunWarning: the load was client-bound "
                                 "with processes=1 and was sent again (1 rerun(s)); with processes=2 the self-check is ok*"])
    metrics = bench["extra_info"]["gpubench"]["metrics"]
    assert (metrics["client_processes"], metrics["client_reruns"], metrics["client_bound"]) == (2, 1, 0)
    assert len(bench["stats"]["data"]) == 8  # the rerun's requests only


def test_a_load_still_client_bound_at_the_cap_warns(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result, bench = run_cell(pytester, monkeypatch, enough=99)
    result.stdout.fnmatch_lines(["*ClientBoundWarning: stand-in: 2 process(es) could not keep up (still, with "
                                 "processes=2 after 1 rerun(s): max_processes=2)*"])
    metrics = bench["extra_info"]["gpubench"]["metrics"]
    assert (metrics["client_processes"], metrics["client_reruns"], metrics["client_bound"]) == (2, 1, 1)


@pytest.mark.parametrize(("gpu", "levels"), [("cpu", [1, 4]), ("H200:1", [1, 16, 64, 256])])
def test_serving_suite_sweeps_the_targets_concurrency(pytester: pytest.Pytester, gpu: str, levels: list[int]) -> None:
    result = pytester.runpytest_subprocess(str(SUITE), f"--gpu={gpu}", "--collect-only", "-q", "-p", "no:cacheprovider")
    ids = [line.split("::")[-1] for line in result.stdout.lines if "::test_serving[" in line]
    assert ids == [f"test_serving[{engine}-{c}-{gpu}]" for engine in ("transformers", "vllm") for c in levels]
