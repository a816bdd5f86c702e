"""SIGTERM, SIGHUP and a second Ctrl-C stop every server and keep the finished cells; after a SIGKILL of pytest,
the next run stops what the killed one left.

Each case runs pytest in a real subprocess on a real server (tests/servers/fake_openai_server.py, with a child
process in its group), sends real signals to it, and checks through /proc that no process of the server's
group is left and that the autosaved JSON holds the cell that finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytest_gpubench.serving.ports import process_group_members


FAKE_SERVER = Path(__file__).parent / "servers" / "fake_openai_server.py"
REGISTRY_ENV = "GPUBENCH_SERVER_REGISTRY"  # a registry of its own for each case: no other run sweeps it
# generous: a loaded 2-core machine takes many seconds to start pytest, and the server
WITHIN_S = 120.0

CELLS = """
import os
import sys
import time
from pathlib import Path


def test_finished(gpubench):
    gpubench.record([0.001, 0.002, 0.003])


def test_serving(llm_server):
    argv = [sys.executable, os.environ["FAKE_SERVER"], "--port", "{port}", "--child", "--pidfile", "pids",
            *os.environ.get("SERVER_ARGS", "").split()]
    server = llm_server("command", argv=argv, grace_s=float(os.environ.get("GRACE_S", "2")))
    Path("up").write_text(str(server.pgid))
    time.sleep(600)
"""


def _default_handlers() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


class Run:
    """A pytest subprocess in ``folder``, its output in files (a pipe nobody reads could block it)."""

    def __init__(self, folder: Path, env: dict[str, str], *args: str) -> None:
        self.folder = folder
        self.out = (folder / "stdout.txt").open("wb")
        self.err = (folder / "stderr.txt").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--gpu=cpu", *args],
            cwd=folder, env=env, stdout=self.out, stderr=self.err,
            # an ignored signal is inherited (this suite run as a background job, `pytest tests &`, ignores
            # SIGINT; run under nohup it ignores SIGHUP), and the run rightly keeps it ignored; these cases are
            # about a run that gets these signals
            preexec_fn=_default_handlers,
        )

    def finish(self, timeout_s: float) -> tuple[int, str]:
        try:
            code = self.process.wait(timeout=timeout_s)
        finally:
            self.process.kill()
            self.process.wait()
            self.out.close()
            self.err.close()
        return code, (self.folder / "stdout.txt").read_text() + (self.folder / "stderr.txt").read_text()


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = WITHIN_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s:g} s: {what}"
        time.sleep(0.05)


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    """A run folder with the cells; whatever a failing case left running is killed afterwards."""
    (tmp_path / "test_cells.py").write_text(CELLS)
    yield tmp_path
    if (tmp_path / "up").exists():
        try:
            os.killpg(int((tmp_path / "up").read_text()), signal.SIGKILL)
        except ProcessLookupError:
            pass


def environment(folder: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "FAKE_SERVER": str(FAKE_SERVER), REGISTRY_ENV: str(folder / "registry"), **extra}
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID", "PYTEST_ADDOPTS"):
        env.pop(name, None)
    return env


def start_and_wait_for_server(folder: Path, env: dict[str, str], *args: str) -> tuple[Run, int, list[int]]:
    run = Run(folder, env, "--benchmark-autosave", *args)
    wait_until(lambda: (folder / "up").exists() or run.process.poll() is not None, "the server is up")
    assert run.process.poll() is None, run.finish(10)[1]
    pgid = int((folder / "up").read_text())
    pids = list(map(int, (folder / "pids").read_text().split()))
    assert len(pids) == 2 and all(running(pid) for pid in pids)  # the server and its child
    return run, pgid, pids


def assert_server_gone(pgid: int, pids: list[int]) -> None:
    assert process_group_members(pgid) == set()
    assert [pid for pid in pids if running(pid)] == []


def saved_cells(folder: Path) -> list[str]:
    return [bench["fullname"] for path in (folder / ".benchmarks").rglob("*.json")
            for bench in json.loads(path.read_text())["benchmarks"]]


@pytest.mark.parametrize("workers", [[], ["-n", "2", "--dist", "loadfile"]], ids=["in-process", "xdist"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_termination_signal_stops_the_server_and_saves_finished_cells(folder: Path, sig: signal.Signals,
                                                                     workers: list[str]) -> None:
    # under xdist the signal goes to the controller, as CI's cancellation sends it; loadfile keeps the two cells
    # in order on one worker, so the finished one has finished
    run, pgid, pids = start_and_wait_for_server(folder, environment(folder), *workers)
    run.process.send_signal(sig)
    code, output = run.finish(WITHIN_S)
    assert code == pytest.ExitCode.INTERRUPTED, output
    # gone by the time the run has returned to the shell, not a moment later
    assert_server_gone(pgid, pids)
    assert saved_cells(folder) == ["test_cells.py::test_finished[cpu]"], output
    # a line of its own, not appended to the progress dots
    assert any(line.startswith(f"gpubench: {sig.name}: stopping as on Ctrl-C") for line in output.splitlines()), output
    assert "Traceback" not in output


def test_second_interrupt_during_the_grace_period_kills_the_server_without_a_traceback(folder: Path) -> None:
    # the server ignores SIGTERM: only the 300 s grace period, or a second Ctrl-C, ends its teardown
    termed = folder / "termed"
    env = environment(folder, SERVER_ARGS=f"--ignore-term {termed}", GRACE_S="300")
    run, pgid, pids = start_and_wait_for_server(folder, env)
    run.process.send_signal(signal.SIGINT)
    wait_until(termed.exists, "the teardown sends SIGTERM to the server")
    sent_second = time.monotonic()
    run.process.send_signal(signal.SIGINT)
    code, output = run.finish(WITHIN_S)
    assert time.monotonic() - sent_second < 60  # not the 300 s grace period
    assert code == pytest.ExitCode.INTERRUPTED, output
    assert_server_gone(pgid, pids)
    assert saved_cells(folder) == ["test_cells.py::test_finished[cpu]"], output
    assert "gpubench: SIGINT while stopping: killed 1 server group at once" in output
    assert "Traceback" not in output


def test_next_run_stops_the_servers_a_killed_run_left_and_nothing_else(folder: Path) -> None:
    env = environment(folder)
    run, pgid, pids = start_and_wait_for_server(folder, env)
    # a process whose group id a stale entry names, started after that entry: pid reuse must not get it killed
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        stale = {"pgid": bystander.pid, "leader_start_ticks": 1, "cmdline": ["python", "server.py"], "name": "old",
                 "boot_id": Path("/proc/sys/kernel/random/boot_id").read_text().strip(), "started_at": 0.0,
                 "owner": {"pid": 1, "start_ticks": 0, "run": "gone"}}
        (folder / "registry").mkdir(exist_ok=True)
        (folder / "registry" / f"{bystander.pid}.json").write_text(json.dumps(stale))
        run.process.send_signal(signal.SIGKILL)
        run.finish(WITHIN_S)
        time.sleep(0.5)
        assert all(running(pid) for pid in pids)  # what SIGKILL leaves: a server nobody will stop

        (folder / "test_cells.py").write_text("def test_nothing():\n    pass\n")
        code, output = Run(folder, env).finish(WITHIN_S)
        assert code == pytest.ExitCode.OK, output
        assert_server_gone(pgid, pids)
        lines = [line for line in output.splitlines() if "left running by an earlier run" in line]
        assert len(lines) == 1 and f"gpubench: stopped 1 server left running by an earlier run that was killed: pgid {pgid} (" in lines[0], output
        assert running(bystander.pid)
        assert list((folder / "registry").glob("*.json")) == []
    finally:
        bystander.kill()
        bystander.wait()
