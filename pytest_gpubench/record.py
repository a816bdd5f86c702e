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
from dataclasses import asdict, dataclass, field
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


@dataclass(frozen=True)
class CellRecord:
    """One measured cell, as plain data: what travels from an xdist worker (or, later, a subprocess or a
    container) to the process that stores it in pytest-benchmark."""

    nodeid: str
    name: str
    group: str | None
    param: str | None
    params: dict[str, Any]
    totals_s: tuple[float, ...]
    loops: int
    timer: str
    extra_info: dict[str, Any] = field(default_factory=dict)

    @property
    def samples_s(self) -> tuple[float, ...]:
        return tuple(total / self.loops for total in self.totals_s)

    @property
    def details(self) -> dict[str, Any]:
        return dict(self.extra_info.get(GPUBENCH_KEY, {}))

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "totals_s": list(self.totals_s)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CellRecord:
        return cls(**{**data, "totals_s": tuple(data["totals_s"])})


def jsonable_params(params: dict[str, Any] | None) -> dict[str, Any]:
    """Targets and variants by their ids, so saved params read 'H200:1', not an object's repr."""
    out: dict[str, Any] = {}
    for key, value in (params or {}).items():
        ident = getattr(value, "id", None) or getattr(value, "name", None)
        out[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(ident or value)
    return out


def record_samples(benchmark: Any, timer: ReplayTimer, record: CellRecord) -> None:
    """Store the record's totals (each the time of ``loops`` calls) as the benchmark's rounds."""
    if not record.totals_s:
        raise ValueError("no samples to record")
    benchmark.extra_info.update(record.extra_info)
    timer.load(record.timer, record.totals_s)
    benchmark.pedantic(_nothing, rounds=len(record.totals_s), iterations=record.loops, warmup_rounds=0)


class _RecordAsFixture:
    """What pytest-benchmark's Metadata reads from a fixture, for a cell measured in another process."""

    cprofile_stats = None
    has_error = False

    def __init__(self, record: CellRecord) -> None:
        self.name = record.name
        self.fullname = record.nodeid
        self.group = record.group
        self.param = record.param
        self.params = record.params
        self.extra_info = dict(record.extra_info)


def add_to_benchmark_session(benchmark_session: Any, record: CellRecord) -> None:
    """Append a cell measured elsewhere (an xdist worker) to this process's pytest-benchmark session, as
    if its own fixture had run: Metadata divides each total by ``loops`` exactly as pedantic does."""
    from pytest_benchmark.stats import Metadata

    options = {"timer": record.timer, "min_rounds": len(record.totals_s), "warmup": False, "disable_gc": False}
    metadata = Metadata(_RecordAsFixture(record), iterations=record.loops, options=options)
    for total in record.totals_s:
        metadata.update(total)
    benchmark_session.benchmarks.append(metadata)


def tidy_saved_json(benchmarks: Sequence[Any], output_json: dict[str, Any]) -> None:
    """Saved runs keep every gpubench cell's raw samples (the regression gate tests significance on them)
    and name targets and variants by their ids in ``params``."""
    by_name = {b.fullname: b for b in benchmarks if GPUBENCH_KEY in b.extra_info}
    for entry in output_json.get("benchmarks", []):
        bench = by_name.get(entry.get("fullname"))
        if bench is None:
            continue
        entry["params"] = jsonable_params(entry.get("params"))
        if "data" not in entry.get("stats", {}):
            entry["stats"]["data"] = list(bench.stats.data)
