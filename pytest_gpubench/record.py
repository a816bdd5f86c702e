"""The bridge into pytest-benchmark: measured samples become one of its benchmarks, through its public API.

pytest-benchmark times a callable with a timer it calls before and after each round. A replay timer
hands it, round by round, the durations gpubench measured (on the device, in a subprocess, in a remote
container), so ``benchmark.pedantic`` stores exactly those samples: its storage, ``--benchmark-compare``,
``--benchmark-compare-fail`` and the ``pytest-benchmark compare`` command then work unchanged.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Sequence
from typing import Any

import pytest

GPUBENCH_KEY = "gpubench"  # extra_info[GPUBENCH_KEY] marks a benchmark as ours and holds its details


class ReplayTimer:
    """Returns 0.0 at the start of a round and the next recorded duration at its end."""

    def __init__(self) -> None:
        self.__name__ = "gpubench"
        self._durations: deque[float] = deque()
        self._at_start = True

    def load(self, name: str, durations: Sequence[float]) -> None:
        self.__name__ = name
        self._durations = deque(durations)
        self._at_start = True

    def __call__(self) -> float:
        if self._at_start:
            self._at_start = False
            return 0.0
        self._at_start = True
        return self._durations.popleft()


def _nothing() -> None:
    return None


def attach_replay_timer(item: pytest.Item) -> None:
    """At collection, give a gpubench cell's ``benchmark`` fixture a replay timer (keeping any
    ``@pytest.mark.benchmark`` options): the fixture reads its timer from that marker when it is created."""
    existing = item.get_closest_marker("benchmark")
    options = dict(existing.kwargs) if existing else {}
    options["timer"] = ReplayTimer()
    item.add_marker(pytest.mark.benchmark(**options), append=False)


def replay_timer_of(request: pytest.FixtureRequest) -> ReplayTimer:
    if "benchmark" in _own_argnames(request):  # it would call the replay timer with nothing to replay
        pytest.fail(f"{request.node.nodeid}: use either the benchmark or the gpubench fixture, not both", pytrace=False)
    marker = request.node.get_closest_marker("benchmark")
    timer = marker.kwargs.get("timer") if marker else None
    if not isinstance(timer, ReplayTimer):
        raise RuntimeError(f"{request.node.nodeid}: pytest-gpubench did not see this test at collection")
    return timer


def _own_argnames(request: pytest.FixtureRequest) -> tuple[str, ...]:
    function = getattr(request.node, "function", None)
    return tuple(inspect.signature(function).parameters) if function is not None else ()


def record_samples(benchmark: Any, timer: ReplayTimer, timer_name: str, totals_s: Sequence[float], loops: int,
                   extra_info: dict[str, Any]) -> None:
    """Store ``totals_s`` (each the time of ``loops`` calls) as the benchmark's rounds."""
    if not totals_s:
        raise ValueError("no samples to record")
    benchmark.extra_info.update(extra_info)
    timer.load(timer_name, totals_s)
    benchmark.pedantic(_nothing, rounds=len(totals_s), iterations=loops, warmup_rounds=0)


def keep_raw_samples(benchmarks: Sequence[Any], output_json: dict[str, Any]) -> None:
    """Saved runs keep every gpubench cell's raw samples: the regression gate tests significance on them."""
    by_name = {b.fullname: b for b in benchmarks if GPUBENCH_KEY in b.extra_info}
    for entry in output_json.get("benchmarks", []):
        bench = by_name.get(entry.get("fullname"))
        if bench is not None and "data" not in entry.get("stats", {}):
            entry["stats"]["data"] = list(bench.stats.data)
