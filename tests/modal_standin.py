"""A recording stand-in for Modal, for tests with no Modal account: a "sandbox" is this machine, its
project folder is the test's own, and each call the executor makes is appended to a JSON-lines file, so
a test can count sandboxes created and terminated. Thin on purpose: it carries out commands and records,
nothing else; the live tests (tests/test_modal_live.py) cover what it cannot.

Configured by environment variables, as a pytester run inherits them:
- GPUBENCH_STANDIN_LOG: the JSON-lines record (required);
- GPUBENCH_STANDIN_PROJECT: the folder that stands for /root/project (required);
- GPUBENCH_STANDIN_FAIL_DOWNLOAD: a model whose weight download fails as a gated repo does;
- GPUBENCH_STANDIN_LEFTOVER: a tag JSON for one sandbox an earlier run left running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pytest_gpubench.executors.modal import OUT_DIR, PROJECT_DIR, ModalSettings


def record(event: str, **fields: Any) -> None:
    with open(os.environ["GPUBENCH_STANDIN_LOG"], "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"event": event, **fields}) + "\n")


class StandInSandbox:
    def __init__(self, object_id: str, tags: dict[str, str], out_dir: Path) -> None:
        self.object_id = object_id
        self.tags = tags
        self.out_dir = out_dir
        self.processes: list[subprocess.Popen[str]] = []


class StandInProcess:
    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._process = process

    def lines(self) -> Iterator[str]:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            yield line.rstrip("\n")

    def wait(self) -> int:
        return self._process.wait()


class StandInDriver:
    def __init__(self) -> None:
        self.project = os.environ["GPUBENCH_STANDIN_PROJECT"]
        self.count = 0
        self.leftovers: list[StandInSandbox] = []
        if os.environ.get("GPUBENCH_STANDIN_LEFTOVER"):
            self.leftovers.append(StandInSandbox("sb-leftover", json.loads(os.environ["GPUBENCH_STANDIN_LEFTOVER"]),
                                                 Path(tempfile.mkdtemp())))

    def _local(self, text: str, sandbox: StandInSandbox) -> str:
        return text.replace(OUT_DIR, str(sandbox.out_dir)).replace(PROJECT_DIR, self.project)

    @contextmanager
    def running_app(self, settings: ModalSettings) -> Iterator[str]:
        record("app-start", name=settings.app_name)
        try:
            yield "app"
        finally:
            record("app-stop")

    def image(self, settings: ModalSettings, project: Path) -> str:
        record("image", requirements=list(settings.requirements), project=str(project))
        return "image"

    def create_sandbox(self, app: Any, image: Any, gpu: str | None, settings: ModalSettings,
                       tags: dict[str, str], env: dict[str, str]) -> StandInSandbox:
        self.count += 1
        sandbox = StandInSandbox(f"sb-{os.getpid()}-{self.count}", dict(tags), Path(tempfile.mkdtemp()))
        record("create", id=sandbox.object_id, gpu=gpu, timeout=settings.timeout_s, tags=tags)
        return sandbox

    def exec(self, sandbox: StandInSandbox, argv: list[str], env: dict[str, str]) -> StandInProcess:
        local = [self._local(a, sandbox) for a in argv]
        if local[0] == "python":
            local[0] = sys.executable
        fail = os.environ.get("GPUBENCH_STANDIN_FAIL_DOWNLOAD")
        if fail and fail in argv and "snapshot_download" in " ".join(argv):
            local = [sys.executable, "-c", "print('401 Client Error: Cannot access gated repo for url "
                     "https://huggingface.co/api/models/x. Access to model x is restricted.'); raise SystemExit(1)"]
        record("exec", id=sandbox.object_id, argv=argv)
        process = subprocess.Popen(local, cwd=self.project, env={**os.environ, **env}, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)
        sandbox.processes.append(process)
        record("pid", id=sandbox.object_id, pid=process.pid)
        return StandInProcess(process)

    def read_text(self, sandbox: StandInSandbox, path: str) -> str:
        local = Path(self._local(path, sandbox))
        return local.read_text() if local.exists() else ""

    def terminate(self, sandbox: StandInSandbox) -> None:
        record("terminate", id=sandbox.object_id)
        for process in sandbox.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def sandboxes_tagged(self, tags: dict[str, str]) -> list[StandInSandbox]:
        return [s for s in self.leftovers if all(s.tags.get(k) == v for k, v in tags.items())]

    def tags_of(self, sandbox: StandInSandbox) -> dict[str, str]:
        return sandbox.tags


CONFTEST = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
import pytest
from modal_standin import StandInDriver

@pytest.hookimpl
def pytest_gpubench_modal_driver(config):
    return StandInDriver()
"""
