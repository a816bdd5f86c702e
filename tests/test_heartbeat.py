"""Heartbeats reach the user while the phase runs: under pytest's default capture and under ``-n``.

The proof is a handshake: the inner test blocks until the outer test has read a heartbeat line from the
inner pytest's stdout, so a line that only shows up afterwards (captured, or never relayed) fails the test."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

FAST = ("--gpubench-max-time=0.3", "--gpubench-min-time=0.05", "--gpubench-warmup=0.01")
# generous: a loaded 2-core machine takes many seconds to start pytest and two xdist workers
SEEN_WITHIN_S = 150.0

BLOCKED_CELL = """
import os
import time
from pathlib import Path


def test_cell(gpubench):
    go = Path(os.environ["GPUBENCH_TEST_GO"])
    deadline = time.monotonic() + 300

    def first_call_compiles():
        # blocks, as a long first call (a JIT compile) would, until the outer test has seen a heartbeat live
        while not go.exists():
            assert time.monotonic() < deadline, "nobody saw a heartbeat while the cell ran"
            time.sleep(0.05)

    gpubench(first_call_compiles)
"""


class LiveRun:
    """A pytest subprocess whose stdout is read line by line while it runs."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self._queue.put(raw.decode("utf-8", errors="replace").rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, text: str, timeout_s: float) -> str | None:
        """The first line containing text, read before timeout_s passes; None if the output ended or time ran out."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                return None
            if line is None:
                return None
            self.lines.append(line)
            if text in line:
                return line
        return None

    def finish(self, timeout_s: float) -> int:
        try:
            code = self.process.wait(timeout=timeout_s)
        finally:
            self.process.kill()
        while (line := self._queue.get(timeout=10)) is not None:
            self.lines.append(line)
        return code

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


@pytest.mark.parametrize("xdist", [False, True], ids=["default-capture", "xdist-n2"])
def test_heartbeat_is_seen_while_the_cell_runs(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                              xdist: bool) -> None:
    go = pytester.path / "go"
    monkeypatch.setenv("GPUBENCH_HEARTBEAT_S", "0.5")
    monkeypatch.setenv("GPUBENCH_TEST_GO", str(go))
    pytester.makepyfile(test_blocked=BLOCKED_CELL)
    args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--gpu", "cpu", *FAST]
    if xdist:
        args += ["-n", "2"]
    run = LiveRun(pytester.popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    try:
        seen = run.wait_for("[gpubench] test_blocked.py::test_cell[cpu]: warm-up, ", SEEN_WITHIN_S)
    finally:
        go.touch()  # the inner test ends either way
    code = run.finish(timeout_s=SEEN_WITHIN_S)
    assert seen is not None, f"no heartbeat line while the cell was blocked:\n{run.output}"
    assert code == 0, run.output
    assert "Captured stdout" not in run.output


def test_ticking_beats_while_the_main_thread_blocks(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """The API other phases use (an environment build in a subprocess): lines with the phase and the detail."""
    go = pytester.path / "go"
    monkeypatch.setenv("GPUBENCH_TEST_GO", str(go))
    pytester.makepyfile(test_build="""
        import os
        import subprocess
        import sys

        from pytest_gpubench.heartbeat import ticking


        def test_build(pytestconfig):
            wait = "import os, time\\nwhile not os.path.exists(os.environ['GPUBENCH_TEST_GO']): time.sleep(0.05)"
            with ticking(pytestconfig, "cell-a", "environment build", detail=lambda: "pip install torch",
                         interval_s=0.3):
                subprocess.run([sys.executable, "-c", wait], check=True, timeout=300)
        """)
    run = LiveRun(pytester.popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    try:
        first = run.wait_for("[gpubench] cell-a: environment build, ", SEEN_WITHIN_S)
        second = run.wait_for("[gpubench] cell-a: environment build, ", SEEN_WITHIN_S) if first else None
    finally:
        go.touch()
    code = run.finish(timeout_s=SEEN_WITHIN_S)
    assert first is not None and second is not None, run.output
    assert first.endswith(" s, pip install torch"), first
    assert code == 0, run.output


def test_a_bad_interval_is_one_usage_line(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUBENCH_HEARTBEAT_S", "soon")
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "GPUBENCH_HEARTBEAT_S='soon': use seconds between heartbeat lines, a number > 0 (e.g. 10)" in result.stderr.str()
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_a_phase_prints_once_an_interval_with_its_own_clock(pytester: pytest.Pytester) -> None:
    """In-process: the rate limit, the line's format, and set_phase starting the clock again."""
    pytester.makepyfile(test_unit="""
        import time

        from pytest_gpubench.heartbeat import Heartbeat


        def test_unit(pytestconfig):
            with Heartbeat(pytestconfig, "cell-b", "server start", interval_s=0.2) as heartbeat:
                heartbeat.beat("loading")  # too soon: nothing
                time.sleep(0.25)
                heartbeat.beat("weights 3/8")
                heartbeat.beat("weights 4/8")  # within the interval: nothing
                heartbeat.set_phase("warm-up")
                time.sleep(0.25)
                heartbeat.beat()
            heartbeat.beat("after close")  # nothing
        """)
    result = pytester.runpytest("-p", "no:cacheprovider", "-s")
    result.assert_outcomes(passed=1)
    lines = [line for line in result.outlines if "[gpubench]" in line]
    assert len(lines) == 2, result.stdout.str()
    assert lines[0].endswith("[gpubench] cell-b: server start, 0 s, weights 3/8")
    assert lines[1].endswith("[gpubench] cell-b: warm-up, 0 s")
