"""Heartbeats: a line at least every interval (10 s) in every long phase of a cell, shown live.

A slow phase that prints nothing looks like a hang, so sampling, server starts, warm-up, loads, environment
builds and GPU lock waits all report through this one module::

    [gpubench] tests/test_mm.py::test_mm[H100:1]: warm-up, 42 s, 3 samples

Two things stand between a line and the user's eyes, and this module handles both:

- pytest captures a test's output (and the terminal reporter's, whose file is the captured fd 1), so a line
  is written with the capture manager suspended, as pytest-benchmark's logger and pytest's own live logging do.
- under ``-n`` (pytest-xdist) only the controller's terminal is seen. A worker appends its lines to a file in a
  directory the controller made and handed to it through ``workerinput``; a thread on the controller tails
  those files and prints each line. (xdist's channel carries only the event names its controller knows, and
  its ``workeroutput`` arrives when a worker ends, too late for a heartbeat.)
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

INTERVAL_ENV = "GPUBENCH_HEARTBEAT_S"
DEFAULT_INTERVAL_S = 10.0
RELAY_DIR_KEY = "gpubench_heartbeat_dir"  # in an xdist worker's workerinput
RELAY_PLUGIN_NAME = "gpubench-heartbeat-relay"
RELAY_POLL_S = 0.2  # how soon a worker's line reaches the controller's terminal
PREFIX = "[gpubench]"


def heartbeat_interval() -> float:
    """Seconds between two lines of one phase: 10, or $GPUBENCH_HEARTBEAT_S (tests use 0.5)."""
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise pytest.UsageError(f"{INTERVAL_ENV}={raw!r}: use seconds between heartbeat lines, a number > 0 (e.g. 10)")
    return value


class LineOutput(Protocol):
    def write(self, line: str) -> None: ...


class TerminalOutput:
    """This process's terminal, reached through pytest's terminal reporter with capture suspended."""

    def __init__(self, config: pytest.Config) -> None:
        self._config = config
        # one line at a time: ticker threads of several phases and the relay thread may write together
        self._lock = threading.Lock()

    def write(self, line: str) -> None:
        plugins = self._config.pluginmanager
        reporter = plugins.get_plugin("terminalreporter")
        if reporter is None:  # -p no:terminal: the user asked for no terminal output
            return
        capman = plugins.get_plugin("capturemanager")
        # global_and_fixture_disabled resumes capture only if it was on, so a line written between tests
        # (or from a session-level phase) does not switch capturing on behind pytest's back
        suspended = capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext()
        with self._lock, suspended:
            reporter.ensure_newline()
            if self._config.get_terminal_writer().width_of_current_line:
                # xdist's progress dots leave the line open without the file name ensure_newline looks for
                self._config.get_terminal_writer().line()
            reporter.write_line(line)
            reporter.flush()  # block-buffered when stdout is a pipe (CI logs): a heartbeat must not wait there


class WorkerFileOutput:
    """An xdist worker's heartbeat file, which the controller's relay tails."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()

    def write(self, line: str) -> None:
        with self._lock:
            try:
                # one write of a whole line in append mode: the relay never sees two lines interleaved
                with open(self._path, "a", encoding="utf-8") as handle:
                    handle.write(line.replace("\n", " ") + "\n")
            except OSError:
                pass  # the controller has ended and removed the directory; nobody is left to read the line


OUTPUT_KEY = pytest.StashKey[LineOutput]()


def output_for(config: pytest.Config) -> LineOutput:
    """Where this process's heartbeat lines go: the relay file in an xdist worker, else the terminal."""
    output = config.stash.get(OUTPUT_KEY, None)
    if output is None:
        workerinput: dict[str, Any] = getattr(config, "workerinput", {})
        relay_dir = workerinput.get(RELAY_DIR_KEY)
        if relay_dir:
            output = WorkerFileOutput(Path(relay_dir) / f"{workerinput.get('workerid', os.getpid())}.log")
        else:
            output = TerminalOutput(config)
        output = config.stash.setdefault(OUTPUT_KEY, output)
    return output


class Heartbeat:
    """The heartbeat of one phase of one cell: ``beat()`` from a polling loop prints at most one line an interval.

    The first line comes one interval after the phase starts, so short phases print nothing. Thread-safe: a
    ticker thread and the phase's own loop may beat the same heartbeat."""

    def __init__(self, config: pytest.Config, cell: str, phase: str, interval_s: float | None = None) -> None:
        if interval_s is not None and not (interval_s > 0 and math.isfinite(interval_s)):
            raise ValueError(f"interval_s={interval_s!r}; use seconds > 0")
        self.cell = cell
        self.interval_s = interval_s if interval_s is not None else heartbeat_interval()
        self._output = output_for(config)
        self._lock = threading.Lock()
        now = time.monotonic()
        self._phase = phase
        self._phase_started = now
        self._last_line = now
        self._detail = ""
        self._closed = False

    @property
    def phase(self) -> str:
        return self._phase

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def elapsed_s(self) -> float:
        """Seconds since the current phase began."""
        return time.monotonic() - self._phase_started

    def due_in(self) -> float:
        """Seconds until the next line is due (0 when it is due now)."""
        return max(0.0, self._last_line + self.interval_s - time.monotonic())

    def line(self) -> str:
        text = f"{PREFIX} {self.cell}: {self._phase}, {self.elapsed_s:.0f} s"
        return f"{text}, {self._detail}" if self._detail else text

    def beat(self, detail: str = "") -> None:
        """Note the phase's progress; print a line when one is due. An empty detail keeps the last one."""
        with self._lock:
            if detail:
                self._detail = detail
            now = time.monotonic()
            if self._closed or now - self._last_line < self.interval_s:
                return
            self._last_line = now
            # written under the lock, so that once close() returns this heartbeat never writes again
            self._output.write(self.line())

    def set_phase(self, phase: str) -> None:
        """Move on to another phase: its clock starts at 0 and the last phase's detail is dropped."""
        with self._lock:
            if phase != self._phase:
                self._phase = phase
                self._phase_started = time.monotonic()
                self._detail = ""

    def close(self) -> None:
        """No line after this one returns (a ticker thread may still be winding down)."""
        with self._lock:
            self._closed = True

    def __enter__(self) -> Heartbeat:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _describe(detail: Callable[[], str] | None) -> str:
    if detail is None:
        return ""
    try:
        return detail()
    except Exception as error:  # noqa: BLE001 - a broken detail must not silence the heartbeat
        return f"(no detail: {type(error).__name__}: {error})"


@contextlib.contextmanager
def ticking(config: pytest.Config, cell: str, phase: str, detail: Callable[[], str] | None = None,
            interval_s: float | None = None) -> Iterator[Heartbeat]:
    """Beat from a background thread while the block runs, for phases whose thread blocks (a subprocess, a
    lock, one long call). ``detail()`` is asked for the line's last part each time one is due; the block may
    also beat or set_phase the yielded heartbeat itself."""
    heartbeat = Heartbeat(config, cell, phase, interval_s)
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(heartbeat.due_in() or 0.01) and not heartbeat.closed:
            if heartbeat.due_in() == 0.0:
                heartbeat.beat(_describe(detail))

    thread = threading.Thread(target=tick, name=f"gpubench-heartbeat {cell}: {phase}", daemon=True)
    thread.start()
    try:
        yield heartbeat
    finally:
        stop.set()
        heartbeat.close()
        # close() already guarantees silence; the join only tidies up, and a detail() that hangs must not
        # hang the test with it
        thread.join(timeout=1.0)


class HeartbeatRelay:
    """On the xdist controller: prints the heartbeat lines its workers append to their files.

    A plugin object (registered in pytest_configure); the directory and the tailing thread exist only once a
    worker is configured, so a run without ``-n`` costs nothing."""

    def __init__(self, config: pytest.Config) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._dir: Path | None = None
        self._offsets: dict[Path, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[RELAY_DIR_KEY] = str(self._start())

    @pytest.hookimpl(tryfirst=True)  # the last lines belong before the summary, which follows sessionfinish
    def pytest_sessionfinish(self) -> None:
        self.close()

    @pytest.hookimpl
    def pytest_unconfigure(self) -> None:
        self.close()

    def _start(self) -> Path:
        with self._lock:
            if self._dir is None:
                self._dir = Path(tempfile.mkdtemp(prefix="gpubench-heartbeats-"))
                self._thread = threading.Thread(target=self._run, name="gpubench-heartbeat-relay", daemon=True)
                self._thread.start()
            return self._dir

    def _run(self) -> None:
        while not self._stop.wait(RELAY_POLL_S):
            self._pump()

    def _pump(self) -> None:
        """Print every complete line the workers have added since the last pump."""
        with self._lock:
            if self._dir is None:
                return
            output = output_for(self._config)
            for path in sorted(self._dir.glob("*.log")):
                offset = self._offsets.get(path, 0)
                try:
                    with open(path, "rb") as handle:
                        handle.seek(offset)
                        chunk = handle.read()
                except OSError:
                    continue
                complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits for the next pump
                self._offsets[path] = offset + len(complete)
                for line in complete.decode("utf-8", errors="replace").splitlines():
                    output.write(line)

    def close(self) -> None:
        """Stop tailing, print what is left, remove the directory. Safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._pump()
        with self._lock:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None


def register_heartbeats(config: pytest.Config) -> None:
    """From pytest_configure: check $GPUBENCH_HEARTBEAT_S (a bad value is a usage error, not a mid-run
    failure), choose this process's output, and on an xdist controller relay the workers' lines."""
    heartbeat_interval()
    output_for(config)
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(HeartbeatRelay(config), RELAY_PLUGIN_NAME)
