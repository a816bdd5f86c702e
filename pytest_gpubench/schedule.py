"""The order cells are measured in, and how often: rounds, and the interleaving of a comparison's variants.

Each cell runs through its executor; its reports are then logged as pytest's own protocol would, so the
terminal, JUnit XML, xdist and the consumer (``ingest.py``) see one kind of report wherever the cell ran.

With ``--gpubench-interleave``, the first cell of a comparison (the variants of one benchmark, commit and
target) measures all of them, one round each in turn — A B, then B A, A B... (asv's interleaving,
mirrored so that a linear drift cancels) — and the others log what was measured for them when pytest
reaches them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from .executors import Executor
from .matrix import siblings_of
from .reports import merge_round_reports


def interleaved_order(members: Sequence[pytest.Item], rounds: int) -> list[pytest.Item]:
    order: list[pytest.Item] = []
    for r in range(rounds):
        order.extend(members if r % 2 == 0 else list(reversed(members)))
    return order


class CellScheduler:
    def __init__(self, executor_of: Callable[[pytest.Item], Executor], rounds: int, interleave: bool) -> None:
        self.executor_of = executor_of
        self.rounds = rounds
        self.interleave = interleave
        self._measured: dict[str, list[pytest.TestReport]] = {}

    def run_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> bool:
        item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        reports = self._measured.pop(item.nodeid, None)
        if reports is None:
            if self.interleave:
                reports = self._measure_interleaved(item, nextitem)
            else:
                reports = self.executor_of(item).run(item, nextitem, self.rounds)
        for report in reports:
            item.ihook.pytest_runtest_logreport(report=report)
        # A cell run elsewhere, or measured ahead with its comparison, set nothing up here for ``nextitem``'s
        # sake: leave this process's fixtures as pytest's own protocol would (a no-op when they are).
        item.session._setupstate.teardown_exact(nextitem)  # noqa: SLF001 - pytest has no public equivalent
        item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True

    def _measure_interleaved(self, item: pytest.Item, nextitem: pytest.Item | None) -> list[pytest.TestReport]:
        members = [m for m in siblings_of(item, item.session.items) if m.nodeid not in self._measured]
        if item not in members:
            members.insert(0, item)
        order = interleaved_order(members, self.rounds)
        runs: dict[str, list[list[pytest.TestReport]]] = {m.nodeid: [] for m in members}
        stopped: set[str] = set()
        for index, member in enumerate(order):
            if member.nodeid in stopped:
                continue
            # never the member itself: its function-scoped fixtures must be torn down between its rounds
            following = next((other for other in order[index + 1:] if other is not member), nextitem)
            reports = self.executor_of(member).run(member, following, 1)
            runs[member.nodeid].append(reports)
            if any(r.failed or r.skipped for r in reports):
                stopped.add(member.nodeid)  # a failing or skipped cell says so once, not once a round
        for member in members:
            self._measured[member.nodeid] = merge_round_reports(runs[member.nodeid])
        return self._measured.pop(item.nodeid)
