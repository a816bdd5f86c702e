"""One server's life: launch in its own process group, capture every line it writes, wait until it is
really ready, watch it while the cell runs, and stop it leaving nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .failures import PhaseTimes, ServerFailure, classify, describe_exit, fatal_lines
from .ports import group_listens_on, process_group_members
from .registry import ServerRegistry
from .secrets import redact, secret_values

POLL_S = 0.25


@dataclass(frozen=True)
class ServerSpec:
    """What to launch and how to know it is ready."""

    name: str
    argv: tuple[str, ...]
    port: int
    env: Mapping[str, str] = field(default_factory=dict)  # added to this process's environment
    health_path: str = "/health"
    ready_timeout_s: float = 600.0
    grace_s: float = 10.0  # between SIGTERM and SIGKILL at teardown
    continuous_batching: bool | None = None  # whether the engine batches requests continuously; None: unknown


class _LogPump(threading.Thread):
    """Copies one stream of the server, line by line and redacted, into its log file."""

    def __init__(self, stream: IO[bytes], path: Path, secrets: tuple[str, ...]) -> None:
        super().__init__(daemon=True, name=f"gpubench-log-{path.name}")
        self.stream = stream
        self.path = path
        self.secrets = secrets
        self.last_line = ""
        self.lines = 0

    def run(self) -> None:
        with open(self.path, "w", encoding="utf-8") as out:
            for raw in iter(self.stream.readline, b""):
                line = redact(raw.decode("utf-8", errors="replace"), self.secrets)
                out.write(line)
                out.flush()
                if line.strip():
                    self.last_line = line.strip()
                self.lines += 1


class RunningServer:
    """A launched server. ``wait_ready`` raises ServerFailure with its class and full logs when it fails."""

    def __init__(self, spec: ServerSpec, log_dir: Path, registry: ServerRegistry | None = None) -> None:
        self.spec = spec
        self.log_dir = log_dir
        self._registry = registry if registry is not None else ServerRegistry.for_user()
        self.times: dict[str, float] = {}
        self.died: tuple[float, int] | None = None  # (when, returncode) if it exited before stop()
        self._stopping = False
        self._crash_raised = False
        log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **spec.env}
        self._secrets = secret_values(env)
        self.stdout_path = log_dir / f"{spec.name}.stdout.log"
        self.stderr_path = log_dir / f"{spec.name}.stderr.log"
        self._launched_at = time.monotonic()
        self._pumps: tuple[_LogPump, ...] = ()
        try:
            self.process = subprocess.Popen(
                list(spec.argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=env, start_new_session=True,  # its own process group: teardown reaches every child
            )
        except OSError as error:
            self.stderr_path.write_text(f"{error}\n")
            self.stdout_path.write_text("")
            raise self.failure("engine-not-installed", f"could not launch {spec.argv[0]!r}: {error}", None) from None
        self.pgid = self.process.pid
        # on disk before anything can go wrong: a run killed with SIGKILL leaves this for the next run to stop
        self._registry.add(self.pgid, spec.name)
        assert self.process.stdout is not None and self.process.stderr is not None
        self._pumps = (_LogPump(self.process.stdout, self.stdout_path, self._secrets),
                       _LogPump(self.process.stderr, self.stderr_path, self._secrets))
        for pump in self._pumps:
            pump.start()
        self._watchdog: threading.Thread | None = None

    # -- readiness -----------------------------------------------------------------------------------

    @property
    def secrets(self) -> tuple[str, ...]:
        """The secret values of the server's environment: masked wherever its words are shown."""
        return self._secrets

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.spec.port}"

    @property
    def last_line(self) -> str:
        """The newest non-empty line, stderr first: where servers say what went wrong."""
        for pump in reversed(self._pumps):
            if pump.last_line:
                return pump.last_line
        return ""

    def wait_ready(self) -> None:
        """Until /health answers 200 from a socket that our own process group holds."""
        start = time.monotonic()
        while True:
            returncode = self.process.poll()
            if returncode is not None:
                self.stop()  # its children may live on, holding the log pipes and the GPU
                raise self.failure(None, f"server {self.spec.name!r} {describe_exit(returncode)} while starting",
                                    returncode, phase="startup")
            status = self._health_status()
            if status == 200:
                owned = group_listens_on(self.pgid, self.spec.port)
                if owned is False:
                    self.stop()
                    raise self.failure("port-in-use", f"port {self.spec.port} answers /health, but not from server "
                                        f"{self.spec.name!r}: another process holds it", None)
                break
            now = time.monotonic()
            if now - start > self.spec.ready_timeout_s:
                self.stop()
                raise self.failure("startup-timeout", f"server {self.spec.name!r} not ready after "
                                    f"{self.spec.ready_timeout_s:g} s (last /health: {status or 'no answer'})", None)
            time.sleep(POLL_S)
        self.times["startup"] = time.monotonic() - self._launched_at
        self._watchdog = threading.Thread(target=self._watch, daemon=True, name=f"gpubench-watchdog-{self.spec.name}")
        self._watchdog.start()

    def _health_status(self) -> int | None:
        try:
            with urllib.request.urlopen(self.base_url + self.spec.health_path, timeout=2) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)
        except (OSError, ValueError):
            return None

    def _watch(self) -> None:
        while not self._stopping:
            returncode = self.process.poll()
            if returncode is not None:
                if not self._stopping:
                    self.died = (time.monotonic(), returncode)
                return
            time.sleep(POLL_S)

    def check_alive(self, wait_s: float = 0.0) -> None:
        """Raise the crash, with the full logs, if the server died after it was ready. ``wait_s``: how long to
        wait for an exit that broken connections announce (the watchdog polls only every POLL_S)."""
        if self.died is None and not self._stopping:
            try:
                returncode = self.process.wait(wait_s) if wait_s > 0 else self.process.poll()
            except subprocess.TimeoutExpired:
                returncode = None
            if returncode is not None and not self._stopping:
                self.died = (time.monotonic(), returncode)
        if self.died is not None and not self._crash_raised:
            self._crash_raised = True  # the cell that saw the crash fails; its teardown does not fail again for it
            self.stop()  # children may live on holding the GPU, and the logs are whole only once all are gone
            raise self.failure(None, f"server {self.spec.name!r} {describe_exit(self.died[1])} "
                                f"{self.died[0] - self._launched_at:.1f} s after launch, while the cell ran",
                                self.died[1], phase="running")

    # -- teardown ------------------------------------------------------------------------------------

    def stop(self) -> list[int]:
        """SIGTERM the process group, SIGKILL it after the grace period; returns pids that outlived both."""
        self._stopping = True
        started = time.monotonic()
        for sig, wait_s in ((signal.SIGTERM, self.spec.grace_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                self.process.poll()
                if not process_group_members(self.pgid):
                    break
                time.sleep(0.05)
            else:
                continue
            break
        self.process.poll()
        self._drain()
        self.times["shutdown"] = time.monotonic() - started
        leftover = sorted(process_group_members(self.pgid))
        if not leftover:  # one that outlived SIGKILL stays registered: the next run tries again
            self._registry.remove(self.pgid)
        return leftover

    def _drain(self) -> None:
        for pump in self._pumps:
            pump.join(timeout=5)

    # -- failures ------------------------------------------------------------------------------------

    def logs(self) -> dict[str, str]:
        return {str(path): path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
                for path in (self.stderr_path, self.stdout_path)}

    def failure(self, failure_class: str | None, summary: str, returncode: int | None,
                 phase: str = "startup") -> ServerFailure:
        logs = self.logs()
        # each log's own end: a crash's last words are at the end of stderr or of stdout, not of both joined
        chosen = failure_class or classify(returncode, "\n".join(fatal_lines(text) for text in logs.values()), phase)
        return ServerFailure(chosen, redact(summary, self._secrets), (self.stderr_path, self.stdout_path), logs,
                             PhaseTimes(dict(self.times)), redact(self.last_line, self._secrets))


def launch(spec: ServerSpec, log_dir: Path, registry: ServerRegistry | None = None) -> RunningServer:
    return RunningServer(spec, log_dir, registry)

