"""Where a cell runs: the executor protocol.

An executor says whether it can run a target (and why not), and runs a test item — the whole item, set-up
to teardown, since test bodies and closures cannot be shipped — returning pytest's reports for it. The
call report carries the cell's record (``record.REPORT_ATTRIBUTE``), which the process that owns
pytest-benchmark ingests, wherever the cell ran.

Executors are chosen per cell through the ``pytest_gpubench_make_executor`` hook (``hookspecs.py``), so a
backend is one module with one hook implementation: ``local`` runs cells in this process, ``subprocess``
in another interpreter (a variant's environment), and a remote backend in its own machines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import pytest

if TYPE_CHECKING:
    from ..hardware import Target
    from ..matrix import Commit, Variant


@dataclass(frozen=True)
class ExecutorChoice:
    """What the executor is chosen for: one cell's target, commit and variant."""

    target: Target
    commit: Commit | None = None
    variant: Variant | None = None


class Executor(Protocol):
    name: str

    def unmet_reason(self, target: Target) -> str | None:
        """Why this executor cannot run cells on ``target``, or None when it can."""

    def run(self, item: pytest.Item, nextitem: pytest.Item | None, rounds: int) -> list[pytest.TestReport]:
        """Run ``item`` ``rounds`` times (each set up and torn down anew) and return the reports to log:
        setup, call and teardown, the call report carrying the record of every round merged."""

    def close(self) -> None:
        """Stop whatever the executor keeps running between cells."""
