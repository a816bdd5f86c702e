"""Shared sizes for the bench suites: chip-filling on a GPU, small enough for a 2-core CPU in CI."""

from __future__ import annotations

import pytest

from pytest_gpubench.hardware import Target


@pytest.fixture
def on_gpu(gpubench_target: Target) -> bool:
    return not gpubench_target.is_cpu
