"""A server that fails says why, first, and carries everything it wrote; nothing of it outlives the cell.

Every case starts a real process (tests/servers/fake_openai_server.py) on a real port, and afterwards
checks that none of the server's processes (and, where it starts one, its child's) is still running."""

from __future__ import annotations

import os
import signal
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


STREAM_SERVER = Path(__file__).parent / "servers" / "stream_server.py"

LOAD_CELL = """
import os
import sys


def test_load(llm_server, llm_load):
    server = llm_server("command", argv=[sys.executable, os.environ["STREAM_SERVER"], "--port", "{{port}}",
                                         "--ttft-ms", "20", "--itl-ms", "5", "--crash-after-requests", "8",
                                         "--pidfile", os.environ["PIDFILE"]], grace_s=2)
    # 2 warm-up responses, then 6 timed ones, then the server dies with 6 requests still to send
    llm_load(server, ["hello"], num_requests=12, warmup_requests=2, max_tokens=4, request_rate=20, arrival="fixed",
             max_concurrency={concurrency}, timeout_s=20)


def test_next_cell_still_runs():
    pass
"""


@pytest.mark.parametrize("concurrency", [2, None], ids=["concurrency-below-requests", "concurrency-above-requests"])
def test_server_dying_during_a_load_fails_the_cell_with_its_log_and_what_finished(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, concurrency: int | None
) -> None:
    pidfile = pytester.path / "pids"
    monkeypatch.setenv("STREAM_SERVER", str(STREAM_SERVER))
    monkeypatch.setenv("PIDFILE", str(pidfile))
    pytester.makepyfile(test_load=LOAD_CELL.format(concurrency=concurrency))
    started = time.monotonic()
    try:
        # in a subprocess with a limit: the bug this catches is a run that never ends
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA", timeout=150)
    finally:
        assert_no_process_left_or_kill(pidfile)
    assert time.monotonic() - started < 150
    result.assert_outcomes(passed=1, failed=1)
    assert failure_line(result).startswith("[crashed-mid-run] server 'command' exit code 139"), failure_line(result)
    output = result.stdout.str()
    assert "Fatal Python error: Segmentation fault (simulated)" in output  # the server's full log
    assert "Traceback" not in output and not any(line.startswith("E ") for line in result.stdout.lines)  # no raw error
    assert "During handling of the above exception" not in output
    assert "6 of 12 requests completed before the load stopped" in output
    assert "TTFT median" in output


def assert_no_process_left_or_kill(pidfile: Path) -> None:
    """The server of a run that hung is killed here, so a failing test leaves nothing either."""
    assert processes_mentioning(str(pidfile)) == [] or kill_all(processes_mentioning(str(pidfile)))


def kill_all(pids: list[int]) -> bool:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return False


SHAPED_TOKEN = "hf_" + "Q7wZ" * 9  # in no environment variable: a server may read its token from its own config

REFUSING_CELLS = """
import os
import sys

ARGV = [sys.executable, os.environ["FAKE_SERVER"], "--port", "{port}", "--reject", os.environ["REJECTION"],
        "--pidfile", os.environ["PIDFILE"]]


def test_one_token_request_refused(llm_server):
    llm_server("command", argv=ARGV, grace_s=2, smoke_request=True)


def test_load_refused(llm_server, llm_load):
    llm_load(llm_server("command", argv=ARGV, grace_s=2), ["hello"], num_requests=2, max_tokens=2)
"""


def test_error_bodies_quoting_a_token_are_redacted_in_terminal_and_junit(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pidfile = pytester.path / "pids"
    monkeypatch.setenv("FAKE_SERVER", str(FAKE_SERVER))
    monkeypatch.setenv("PIDFILE", str(pidfile))
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setenv("REJECTION", f"token {SHAPED_TOKEN} lacks access (HF_TOKEN was {SECRET}); "
                                    "Authorization: Bearer Zm9vYmFyYmF6cXV4MTIz")
    pytester.makepyfile(test_refused=REFUSING_CELLS)
    result = pytester.runpytest("-p", "no:cacheprovider", "-rA", "--junitxml=junit.xml")
    assert_no_process_left(pidfile, children=False)
    result.assert_outcomes(failed=2)
    shown = result.stdout.str() + result.stderr.str() + (pytester.path / "junit.xml").read_text()
    for log in (pytester.path / "gpubench-logs").rglob("*.log"):
        shown += log.read_text()
    for secret in (SHAPED_TOKEN, SECRET, "Zm9vYmFyYmF6cXV4MTIz"):
        assert secret not in shown
    failures = [line for line in result.stdout.lines if line.startswith("[unhealthy]")]
    assert len(failures) == 2, result.stdout.str()
    assert all("HTTP 401" in line and "token *** lacks access (HF_TOKEN was ***)" in line for line in failures)
    assert all("Bearer ***" in line for line in failures)


def test_words_in_passing_do_not_name_an_unrelated_crash(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    # HF_TOKEN and "out of memory" in an INFO and a WARNING line, then 300 lines, then a crash of another cause
    result = run_cell(pytester, monkeypatch, "--mention-in-passing", "--stderr-lines", "300",
                      "--fail-with", "KeyError: 'rope_scaling'")
    result.assert_outcomes(passed=1, failed=1)
    assert failure_line(result).startswith("[crashed-on-start] server 'command' exit code 1"), failure_line(result)
    assert "out of memory for a CUDA graph" in result.stdout.str()  # the log is shown whole all the same


def test_a_failure_is_said_once_and_an_unknown_engine_is_named(pytester: pytest.Pytester,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    result = run_cell(pytester, monkeypatch, "--exit", "3")
    result.assert_outcomes(passed=1, failed=1)
    assert len([line for line in result.stdout.lines if line.startswith("[crashed-on-start]")]) == 1
    assert "During handling of the above exception" not in result.stdout.str()

    pytester.makepyfile(test_cell="def test_cell(llm_server):\n    llm_server('nope')\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    assert "llm_server: engine='nope'; use one of vllm, sglang, transformers, command" in result.stdout.lines
    assert "needs model=" not in result.stdout.str()
