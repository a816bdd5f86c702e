"""The subprocess executor: a cell of a variant with code of its own runs in another interpreter — the
variant's environment — through ``python -m pytest_gpubench.runner``, which runs the whole test item there
and writes its reports (the call report carrying the record) as they happen.

The environment is built (or found in the cache) the first time one of its cells runs. The cell's GPUs
are locked here for the subprocess's lifetime and made its ``CUDA_VISIBLE_DEVICES``. A build failure, a
test that does not exist in that environment (an import that fails there) and a runner that dies all
fail the cell with the full log of what went wrong. Ctrl-C here stops the runner's whole process group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import pytest

from ..environments import EnvBuildError, Environment, EnvironmentCache, EnvRecipe
from ..hardware import Target
from ..reports import attach, failure_reports, log_dir_for, record_of
from .local import GpuLockTimeout, LocalExecutor, visible_devices

RUNNER_ENV = "GPUBENCH_RUNNER_ENV"  # in a runner: the environment whose cells run in-process there
LOG_TAIL_LINES = 60
XDIST_ENV = ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID")
# options a runner gets as the user gave them, so it collects the same cells with the same ids and
# measures them the same way
FORWARDED_OPTIONS = {
    "gpubench_gpu": "--gpu", "gpubench_max_time": "--gpubench-max-time", "gpubench_min_time": "--gpubench-min-time",
    "gpubench_min_samples": "--gpubench-min-samples", "gpubench_stdrel": "--gpubench-stdrel",
    "gpubench_warmup": "--gpubench-warmup", "gpubench_cache": "--gpubench-cache",
    "gpubench_commit": "--gpubench-commit", "gpubench_variant": "--gpubench-variant",
    "gpubench_env_dir": "--gpubench-env-dir",
}


def _tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    kept = text.rstrip().splitlines()
    if len(kept) <= lines:
        return "\n".join(kept)
    return f"... ({len(kept) - lines} earlier lines in the full log)\n" + "\n".join(kept[-lines:])


class SubprocessExecutor:
    """Runs the cells of one environment (a commit's variant, or a variant with code) in its interpreter."""

    name = "subprocess"

    def __init__(self, config: pytest.Config, local: LocalExecutor, envs: EnvironmentCache, label: str,
                 recipe: EnvRecipe) -> None:
        self.config = config
        self.local = local
        self.envs = envs
        self.label = label
        self.recipe = recipe
        self._environment: Environment | None = None
        self._build_error: EnvBuildError | None = None

    def unmet_reason(self, target: Target) -> str | None:
        return self.local.unmet_reason(target)

    def environment(self, cell: str) -> Environment:
        """Built once per process; raises the same EnvBuildError for every cell when the build failed."""
        if self._build_error is not None:
            raise self._build_error
        if self._environment is None:
            from ..heartbeat import ticking

            last = [""]  # a build step blocks in a subprocess: the ticker reports its latest line
            with ticking(self.config, cell, f"environment {self.label}", detail=lambda: last[0]):
                try:
                    self._environment = self.envs.get(self.recipe, log=lambda line: last.__setitem__(0, line))
                except EnvBuildError as error:
                    self._build_error = error
                    raise
        return self._environment

    def run(self, item: pytest.Item, nextitem: pytest.Item | None, rounds: int) -> list[pytest.TestReport]:
        started = time.monotonic()
        try:
            env = self.environment(item.nodeid)
        except EnvBuildError as error:
            log_text = error.log_path.read_text(errors="replace") if error.log_path.is_file() else error.output
            return failure_reports(
                item, "setup", f"{error}\n{_tail(error.output)}",
                [(f"gpubench environment {self.label}: build log ({error.log_path})", log_text)],
                duration=time.monotonic() - started,
            )
        build_s = time.monotonic() - started
        target = item.callspec.params.get("gpubench_target")  # type: ignore[attr-defined]
        try:
            with self.local.lease(target, f"{item.nodeid} ({self.label})", always_lock=True) as lease:
                reports = self._run_in_environment(item, env, rounds, visible_devices(self.local.gpus_for(target)))
        except GpuLockTimeout as error:
            return failure_reports(item, "setup", str(error))
        runner_s = time.monotonic() - started - build_s
        for report in reports:
            record = record_of(report) if report.when == "call" else None
            if record is not None:
                record = record.with_details(
                    environment={"name": self.label, "key": env.key, "python": str(env.python),
                                 "resolved_ref": env.resolved_ref, "built_now": env.built_now,
                                 "recipe": self.recipe.describe()},
                    gpu_uuids=list(lease.uuids), gpus_held_from=lease.acquired_at, gpus_waited_s=lease.waited_s,
                )
                record = replace(record, phases_s={**record.phases_s, "env_s": build_s, "runner_s": runner_s})
                attach(report, record)
        return reports

    def _run_in_environment(self, item: pytest.Item, env: Environment, rounds: int, cuda_devices: str) -> list[pytest.TestReport]:
        from ..heartbeat import Heartbeat

        log_dir = log_dir_for(self.config, item.nodeid)
        log_dir.mkdir(parents=True, exist_ok=True)
        out = log_dir / "runner-reports.jsonl"
        log_path = log_dir / "runner.log"
        out.unlink(missing_ok=True)
        child_env = {k: v for k, v in os.environ.items() if k not in XDIST_ENV}
        child_env[RUNNER_ENV] = self.label
        child_env["PYTHONUNBUFFERED"] = "1"
        if cuda_devices:
            child_env["CUDA_VISIBLE_DEVICES"] = cuda_devices
        argv = runner_argv(self.config, str(env.python), str(out), item.nodeid, rounds)
        beat = Heartbeat(self.config, item.nodeid, f"running in environment {self.label}")
        with open(log_path, "w", encoding="utf-8") as log:
            log.write(f"$ {' '.join(argv)}\n")
            log.flush()
            process = subprocess.Popen(argv, cwd=self.config.rootpath, env=child_env, stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                while process.poll() is None:
                    beat.beat(_last_line(log_path))
                    time.sleep(0.05)
            except BaseException:  # Ctrl-C, SIGTERM turned into an exception: the runner's group goes too
                _stop_group(process)
                raise
            finally:
                beat.close()
        lines = out.read_text().splitlines() if out.is_file() else []
        return reports_from_runner(self.config, item, lines, log_path, process.returncode, self.label)

    def close(self) -> None:
        return None


def runner_argv(config: pytest.Config, python: str, out: str, nodeid: str, rounds: int,
                rootdir: str | None = None, inifile: str | None = None) -> list[str]:
    """The command that runs one cell in another interpreter: the same cells, ids and sampling options as
    here (``rootdir``/``inifile`` where the project sits elsewhere, as in a container)."""
    argv = [python, "-m", "pytest_gpubench.runner", out, "--", "-p", "no:cacheprovider",
            f"--rootdir={rootdir or config.rootpath}", f"--gpubench-rounds={rounds}"]
    if inifile or config.inipath is not None:
        argv.append(f"-c={inifile or config.inipath}")
    for dest, flag in FORWARDED_OPTIONS.items():
        value = config.getoption(dest)
        for item in value if isinstance(value, list) else ([] if value is None else [value]):
            argv.append(f"{flag}={item}")
    if config.getoption("benchmark_disable") and not config.getoption("benchmark_enable"):
        argv.append("--benchmark-disable")
    argv.append(nodeid)
    return argv


def reports_from_runner(config: pytest.Config, item: pytest.Item, lines: list[str], log_path: Path, exit_code: int,
                        where: str) -> list[pytest.TestReport]:
    """The cell's reports from a runner's JSON lines, or reports that say why there are none (not collected
    there, the runner died) with the runner's whole log attached."""
    reports: list[pytest.TestReport] = []
    collect_errors: list[str] = []
    started = False
    for line in lines:
        entry: dict[str, Any] = json.loads(line)
        if entry["kind"] == "start" and entry["nodeid"] == item.nodeid:
            started = True
        elif entry["kind"] == "report" and entry["data"].get("nodeid") == item.nodeid:
            reports.append(config.hook.pytest_report_from_serializable(config=config, data=entry["data"]))
        elif entry["kind"] == "collect_error":
            collect_errors.append(f"{entry['nodeid']}: {entry['text']}")
    log_text = log_path.read_text(errors="replace") if log_path.is_file() else ""
    log_section = (f"gpubench runner in {where} ({log_path})", log_text)
    if not reports and started:
        message = (f"[runner-crashed] the runner in {where} exited with {exit_code} while the cell ran; "
                   f"its log: {log_path}\n{_tail(log_text)}")
        return failure_reports(item, "call", message, [log_section])
    if not reports:
        why = ("it was not collected there: " + "\n".join(collect_errors)) if collect_errors else (
            f"the runner exited with {exit_code} before it ran (no such test there?)")
        return failure_reports(item, "setup", f"[not-run-in-environment] {item.nodeid} in {where}: {why}\n"
                               f"{_tail(log_text)}", [log_section])
    have = {r.when for r in reports}
    if "teardown" not in have:
        setup_ended_it = any(r.when == "setup" and not r.passed for r in reports)
        died_in: Literal["call", "teardown"] = "teardown" if setup_ended_it or "call" in have else "call"
        message = (f"[runner-crashed] the runner in {where} exited with {exit_code} during {died_in}; "
                   f"its log: {log_path}\n{_tail(log_text)}")
        return reports + [r for r in failure_reports(item, died_in, message, [log_section]) if r.when not in have]
    for report in reports:
        if report.failed:
            report.sections.append(log_section)
    return reports


def _last_line(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 400))
            lines = handle.read().decode(errors="replace").strip().splitlines()
        return f"last line: {lines[-1][:160]}" if lines else ""
    except OSError:
        return ""


def _stop_group(process: subprocess.Popen[Any]) -> None:
    for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue

