from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

# jaxlib's C++ side (absl) aborts the process when its Python modules are imported a second time. pytester
# restores sys.modules after each inner run, dropping what the run imported, so a test that imported jax inside
# an inner run made the next import of jax, in any later test, abort the whole session. Imported once here,
# before any pytester snapshot, it stays.
try:
    import jax  # noqa: F401
except ImportError:  # the lowest versions' environment has no JAX
    pass

TWO_H200_CSV = (
    "0, NVIDIA H200, 143771, GPU-aaaa, 580.159.04, 1980, 3201\n"
    "1, NVIDIA H200, 143771, GPU-bbbb, 580.159.04, 1980, 3201\n"
)

_FAKE_SMI = """#!/bin/sh
case "$*" in
  *--query-gpu*) cat "$(dirname "$0")/gpus.csv" ;;
  *) echo '| NVIDIA-SMI 580.159.04    Driver Version: 580.159.04    CUDA Version: 13.0 |' ;;
esac
"""


@pytest.fixture(autouse=True)
def _inner_runs_are_not_xdist_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """When this suite runs under xdist, inner pytester runs must not believe they are xdist workers; nor that
    they run in CI, where pytest prints whole failure messages in the short summary (tests read its lines).
    tests/report_support.py reads CI when it is imported, before this runs."""
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID", "CI", "BUILD_NUMBER"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Install a fake nvidia-smi, first on PATH, reporting the given --query-gpu CSV; subprocess runs of
    pytest (runpytest_subprocess) see it. GPU locks go to a folder of this test's own."""

    def install(csv: str) -> None:
        bindir = tmp_path / "fake-bin"
        bindir.mkdir(exist_ok=True)
        (bindir / "gpus.csv").write_text(csv)
        smi = bindir / "nvidia-smi"
        smi.write_text(_FAKE_SMI)
        smi.chmod(smi.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        monkeypatch.setenv("GPUBENCH_LOCK_DIR", str(tmp_path / "gpu-locks"))

    return install


@pytest.fixture
def host_with_two_h200(fake_nvidia_smi: Callable[[str], None]) -> None:
    fake_nvidia_smi(TWO_H200_CSV)
