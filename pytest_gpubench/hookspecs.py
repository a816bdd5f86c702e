"""pytest-gpubench's own hooks, for plugins that add an executor (a remote backend)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .executors import Executor, ExecutorChoice


@pytest.hookspec(firstresult=True)
def pytest_gpubench_make_executor(config: pytest.Config, choice: ExecutorChoice) -> Executor | None:
    """Return the executor that runs the cells of ``choice`` (a target, commit and variant), or None to
    leave them to the next plugin. Called once per distinct choice at collection; the default, tried last,
    runs cells in this process, or in a subprocess of the variant's environment when it brings code."""
