"""A server that fails says why, first, and carries everything it wrote; nothing of it outlives the cell.

Every case starts a real process (tests/servers/fake_openai_server.py) on a real port, and afterwards
checks that none of the server's processes (and, where it starts one, its child's) is still running."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_gpubench.serving.ports import free_port

FAKE_SERVER = Path(__file__).parent / "servers" / "fake_openai_server.py"
SECRET = "hf_sup3rSecretTokenValue"

CELL = """
import os
import sys
import time

FAKE = os.environ["FAKE_SERVER"]


def test_cell(llm_server):
    server = llm_server("command", argv=[sys.executable, FAKE, "--port", "{{port}}", {args}],
                        ready_timeout_s={timeout}, grace_s=2, smoke_request=True{extra})
    time.sleep({run_s})


def test_next_cell_still_runs():
    pass
"""


def run_cell(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *args: str, timeout: float = 30,
             run_s: float = 0.0, extra: str = "") -> pytest.RunResult:
    """Run a cell whose server is the fake with ``args``; afterwards, check that none of its processes is left."""
    monkeypatch.setenv("FAKE_SERVER", str(FAKE_SERVER))
    pidfile = pytester.path / "pids"
    args = (*args, "--pidfile", str(pidfile))
    quoted = ", ".join(repr(a) for a in args)
    pytester.makepyfile(test_cell=CELL.format(args=quoted, timeout=timeout, run_s=run_s, extra=extra))
    result = pytester.runpytest("-p", "no:cacheprovider", "-rA")
    assert_no_process_left(pidfile, children="--child" in args)
    return result


def failure_line(result: pytest.RunResult) -> str:
    """The failed cell's first line, as the report shows it: the class comes first."""
    return next(line for line in result.stdout.lines if line.startswith("["))


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for a reaper that a container's init may never be)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def processes_mentioning(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes() and running(int(entry.name)):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def assert_no_process_left(pidfile: Path, children: bool) -> None:
    # the server's command line names the pidfile: a server stopped before it could write the file is found too
    assert processes_mentioning(str(pidfile)) == []
    if pidfile.exists():
        pids = list(map(int, pidfile.read_text().split()))
        assert len(pids) == (2 if children else 1)  # the server, and the child it started if asked to
        assert [pid for pid in pids if running(pid)] == []


def test_crash_on_start_shows_all_5000_stderr_lines(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run_cell(pytester, monkeypatch, "--stderr-lines", "5000", "--exit", "1")
    result.assert_outcomes(passed=1, failed=1)
    output = result.stdout.str()
    assert "[crashed-on-start] server 'command' exit code 1 while starting" in output
    assert "stderr line 1 of 5000" in output and "stderr line 5000 of 5000" in output
    assert "last log line: stderr line 5000 of 5000" in output
    result.stdout.fnmatch_lines(["*gpubench server 'command' log *command.stderr.log*"])
    log = next((pytester.path / "gpubench-logs").rglob("command.stderr.log"))
    assert log.read_text().count("\n") == 5000


def test_crash_mid_run_fails_the_cell_and_leaves_no_process(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run_cell(pytester, monkeypatch, "--crash-after", "1", "--child", run_s=3)
    result.assert_outcomes(passed=2, errors=1)
    output = result.stdout.str()
    assert "[crashed-mid-run] server 'command' exit code 139" in output
    assert "Segmentation fault (simulated)" in output


def test_hang_times_out_with_heartbeats(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.monotonic()
    result = run_cell(pytester, monkeypatch, "--hang", "--child", timeout=12)
    result.assert_outcomes(passed=1, failed=1)
    assert time.monotonic() - started < 40
    beats = [line for line in result.stdout.lines if "server 'command' starting," in line]
    assert beats and "last log line: loading weights..." in beats[0]
    assert "[startup-timeout] server 'command' not ready after 12 s" in result.stdout.str()


def test_out_of_memory_is_named(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run_cell(pytester, monkeypatch, "--oom")
    result.assert_outcomes(passed=1, failed=1)
    assert "[out-of-memory]" in failure_line(result)
    assert "CUDA out of memory. Tried to allocate 20.00 GiB" in result.stdout.str()


def test_missing_model_is_named(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run_cell(pytester, monkeypatch, "--missing-model", "/models/nope")
    result.assert_outcomes(passed=1, failed=1)
    assert "[model-not-found]" in failure_line(result)


def test_port_held_by_another_process_does_not_look_ready(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    squatter = subprocess.Popen([sys.executable, str(FAKE_SERVER), "--port", str(port)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert squatter.stdout is not None
        while b"ready" not in squatter.stdout.readline():
            pass
        # our server loads for 3 s before it binds, as transformers serve does: meanwhile /health says 200
        result = run_cell(pytester, monkeypatch, "--load-delay", "3", extra=f", port={port}")
    finally:
        squatter.kill()
        squatter.wait()
    result.assert_outcomes(passed=1, failed=1)
    assert "[port-in-use]" in failure_line(result)


def test_secrets_never_reach_the_report_or_the_log(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", SECRET)
    result = run_cell(pytester, monkeypatch, "--echo-env", "HF_TOKEN", "--exit", "1")
    result.assert_outcomes(passed=1, failed=1)
    output = result.stdout.str() + result.stderr.str()
    assert SECRET not in output
    assert "using HF_TOKEN=***" in output
    for log in (pytester.path / "gpubench-logs").rglob("*.log"):
        assert SECRET not in log.read_text()


def test_engine_that_is_not_installed_is_named(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_cell="def test_cell(llm_server):\n    llm_server('command', argv=['no-such-engine-binary', '--port', '{port}'])\n"
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    assert "[engine-not-installed] could not launch 'no-such-engine-binary'" in result.stdout.str()


def test_healthy_server_passes_and_is_stopped_with_its_children(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run_cell(pytester, monkeypatch, "--child")
    result.assert_outcomes(passed=2)
