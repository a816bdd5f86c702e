"""What a cell produces, wherever it runs, and the bridge that stores it in pytest-benchmark.

A *producer* (the gpubench fixture, in this process, an xdist worker, a subprocess of another environment
or a container) turns one measured cell into a :class:`CellRecord`: plain, versioned JSON that travels
with the test's call report. The *consumer* (``ingest.py``, in the process that owns pytest-benchmark)
stores it with :func:`store_in_benchmark_session`, judges it and reports it. No record is stored anywhere
else, so a run measured in one process, under ``-n`` or in other environments ends in the same files.
"""

from __future__ import annotations

import math
import platform
import socket
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from typing import Any

from .measure.stats import Summary

GPUBENCH_KEY = "gpubench"  # extra_info[GPUBENCH_KEY] marks a benchmark as ours and holds its details
CELL_FLAGS_KEY = "cell_flags"  # in the details: what gpubench.flag() was told, kept apart from the computed flags
RECORD_VERSION = 1
REPORT_ATTRIBUTE = "gpubench_record"  # a TestReport attribute: pytest and xdist serialize report.__dict__


class RecordVersionError(ValueError):
    """A record written by another pytest-gpubench than this one reads."""


@dataclass(frozen=True)
class CellRecord:
    """One measured cell as plain data. ``totals_s`` are the raw samples, each the time of ``loops`` calls;
    ``extra_info[GPUBENCH_KEY]`` holds the cell's details (target, timer, metrics, variant...); ``host``
    describes the machine that ran it (which need not be the one that stores it); ``phases_s`` how long
    each phase took there."""

    nodeid: str
    name: str
    group: str | None
    param: str | None
    params: dict[str, Any]
    totals_s: tuple[float, ...]
    loops: int
    timer: str
    extra_info: dict[str, Any] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)
    phases_s: dict[str, float] = field(default_factory=dict)
    version: int = RECORD_VERSION

    @property
    def samples_s(self) -> tuple[float, ...]:
        return tuple(total / self.loops for total in self.totals_s)

    @property
    def details(self) -> dict[str, Any]:
        return dict(self.extra_info.get(GPUBENCH_KEY, {}))

    def with_details(self, **more: Any) -> CellRecord:
        extra = dict(self.extra_info)
        extra[GPUBENCH_KEY] = {**self.details, **more}
        return replace(self, extra_info=extra)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "totals_s": list(self.totals_s)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CellRecord:
        version = data.get("version")
        if version != RECORD_VERSION:
            raise RecordVersionError(
                f"a cell record of version {version!r} arrived, and this pytest-gpubench reads version "
                f"{RECORD_VERSION}: install the same pytest-gpubench where the cell runs"
            )
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{**{k: v for k, v in data.items() if k in known}, "totals_s": tuple(data["totals_s"])})


def describe_host(machine_info: Mapping[str, Any]) -> dict[str, Any]:
    """The machine a cell ran on: enough to tell two hosts (or a container from its controller) apart."""
    return {
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpu": dict(machine_info),
    }


def merge_rounds(rounds: Sequence[CellRecord]) -> CellRecord:
    """One record from several rounds of one cell (each separately set up and warmed): every sample is
    kept, and each round's median and sample count stay in the details, where the speed-up report and
    the gate read across-round evidence."""
    import numpy as np

    first = rounds[0]
    if len(rounds) == 1:
        return first
    loops = first.loops
    totals: list[float] = []
    for record in rounds:
        # rounds of one cell may have chosen different loop counts: keep per-call time exact
        totals.extend(total / record.loops * loops for total in record.totals_s)
    round_medians = [float(np.median(r.samples_s)) for r in rounds]
    merged = replace(
        first,
        totals_s=tuple(totals),
        phases_s={key: sum(r.phases_s.get(key, 0.0) for r in rounds) for key in first.phases_s},
    )
    return merged.with_details(
        rounds=len(rounds),
        round_medians_s=round_medians,
        round_samples=[len(r.totals_s) for r in rounds],
        stop_reason=f"{len(rounds)} rounds; last: {rounds[-1].details.get('stop_reason', '')}",
    )


def jsonable_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Targets, commits and variants by their ids, so saved params read 'H200:1', not an object's repr."""
    out: dict[str, Any] = {}
    for key, value in (params or {}).items():
        ident = getattr(value, "id", None) or getattr(value, "name", None)
        out[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(ident or value)
    return out


class _RecordAsFixture:
    """What pytest-benchmark's Metadata reads from its fixture, for a cell measured by gpubench."""

    cprofile_stats = None
    has_error = False

    def __init__(self, record: CellRecord) -> None:
        self.name = record.name
        self.fullname = record.nodeid
        self.group = record.group
        self.param = record.param
        self.params = record.params
        self.extra_info = dict(record.extra_info)


def honesty_flags(record: CellRecord) -> list[str]:
    """What a reader must know before trusting a cell's figure: the sampler's flags, then those the cell's
    benchmark raised itself (``gpubench.flag``). Empty when there are none."""
    return sampling_flags(record) + cell_flags(record)


def cell_flags(record: CellRecord) -> list[str]:
    """The flags a benchmark raised on its own cell with ``gpubench.flag(...)`` (e.g. a GPU starved by its
    data loader): the sampler cannot see what the figure means, the benchmark can."""
    return [str(flag) for flag in record.details.get(CELL_FLAGS_KEY) or []]


def sampling_flags(record: CellRecord) -> list[str]:
    """The sampler's flags: the cell stopped noisier than the stdrel target (on the time cap), or with fewer
    samples than the minimum. Empty when neither."""
    details = record.details
    flags = []
    summary = Summary.of(record.samples_s)
    target = details.get("stdrel_target")
    if target is not None and not (summary.stdrel <= target):  # inf (one sample) is noisy too
        shown = "n/a" if not math.isfinite(summary.stdrel) else f"{summary.stdrel:.2%}"
        flags.append(f"noisy: stdrel {shown} above the {target:.2%} target")
    minimum = details.get("min_samples")
    if minimum is not None and summary.count < minimum:
        flags.append(f"few samples: {summary.count} < {minimum}")
    return flags


def strict_json(value: Any) -> Any:
    """The same data with every non-finite float (Infinity, NaN) as null: JSON has no such numbers, and
    strict readers (JavaScript's JSON.parse) reject a file that holds one."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def store_in_benchmark_session(benchmark_session: Any, record: CellRecord) -> None:
    """Append a cell to pytest-benchmark's session as if its own fixture had measured it: Metadata divides
    each total by ``loops`` exactly as ``benchmark.pedantic`` does, and ``stats.data`` are the raw samples."""
    from pytest_benchmark.stats import Metadata

    if not record.totals_s:
        raise ValueError(f"{record.nodeid}: a cell record with no samples")
    options = {"timer": record.timer, "min_rounds": len(record.totals_s), "warmup": False, "disable_gc": False}
    # where and how long: the saved run keeps what the cell's host and phases were, whoever stored it
    stored = record.with_details(host=record.host, phases_s=record.phases_s, flags=honesty_flags(record))
    stored = replace(stored, extra_info=strict_json(stored.extra_info))
    metadata = Metadata(_RecordAsFixture(stored), iterations=record.loops, options=options)
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


@dataclass(frozen=True)
class CellResult:
    """What one cell measured, as ``gpubench(...)`` returns it and the terminal summary shows it."""

    record: CellRecord

    @cached_property
    def summary(self) -> Summary:
        return Summary.of(self.record.samples_s)

    @property
    def nodeid(self) -> str:
        return self.record.nodeid

    @property
    def target(self) -> str:
        return str(self.record.details.get("target", "?"))

    @property
    def timer(self) -> str:
        return self.record.timer

    @property
    def cache(self) -> str:
        return str(self.record.details.get("cache", "n/a"))

    @property
    def loops(self) -> int:
        return self.record.loops

    @property
    def stop_reason(self) -> str:
        return str(self.record.details.get("stop_reason", ""))

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.record.details.get("metrics", {}))

    @cached_property
    def flags(self) -> list[str]:
        return honesty_flags(self.record)

    @property
    def work(self) -> str:
        """What one call does, as declared: cells whose work differs (a CPU matmul's size by dtype) say so."""
        work = self.record.details.get("work", {})
        return " ".join(f"{key}={value:.3g}" for key, value in work.items()
                        if key in ("flops", "bytes", "items", "tokens") and isinstance(value, (int, float)))
