"""The ``gpubench`` fixture: time a callable with a device-correct timer, or record samples measured elsewhere."""

from __future__ import annotations

import inspect
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, cast

import pytest

from .executors.local import GpuLockTimeout, Lease
from .hardware import Target
from .heartbeat import Heartbeat, ticking
from .matrix import COMMIT_PARAM, TARGET_PARAM, VARIANT_PARAM, Commit, Variant, baseline_of, cell_params, comparison_key
from .measure.sampler import Measurement, SamplingPolicy, measure
from .measure.throughput import Work, canonical_dtype, throughput_metrics
from .measure.timers import TIMER_NAMES, CacheMode, choose_timer, make_timer
from .options import CACHE_MODES
from .record import CELL_FLAGS_KEY, GPUBENCH_KEY, CellRecord, CellResult, describe_host, jsonable_params
from .session import GpubenchSession, get_session

LEASE_KEY = pytest.StashKey[Lease]()
RECORD_KEY = pytest.StashKey[CellRecord]()  # the cell's record, until its call report takes it


def _dtype_name(dtype: object) -> str | None:
    """'bf16' for torch.bfloat16, jnp.bfloat16 or 'bfloat16'; the dtype's own name when the table lacks it."""
    if dtype is None:
        return None
    return canonical_dtype(dtype) or str(getattr(dtype, "__name__", dtype))


class GpuBench:
    """One cell's measurement. Call it once: ``gpubench(fn, flops=...)`` or ``gpubench.record(samples)``."""

    def __init__(self, request: pytest.FixtureRequest, target: Target, session: GpubenchSession) -> None:
        self.target = target
        self.extra_info: dict[str, Any] = {}
        self._request = request
        self._session = session
        self._used = False
        self._flags: list[str] = []

    @property
    def device(self) -> str:
        """Where the cell's tensors belong: 'cuda' on a GPU target, 'cpu' otherwise."""
        return "cpu" if self.target.is_cpu else "cuda"

    @property
    def policy(self) -> SamplingPolicy:
        return self._session.settings.policy

    @property
    def enabled(self) -> bool:
        """False under --benchmark-disable: the function then runs once, untimed, as a smoke test.

        pytest-benchmark also disables itself under xdist; gpubench measures there all the same (the
        controller stores the results), so only the user's own --benchmark-disable counts."""
        config = self._request.config
        return not (config.getoption("benchmark_disable") and not config.getoption("benchmark_enable"))

    def __call__(
        self,
        fn: Callable[..., Any],
        *args: Any,
        timer: str = "auto",
        cache: str | None = None,
        flops: float | None = None,
        bytes: float | None = None,  # noqa: A002 - the unit's own name reads best at call sites
        items: float | None = None,
        tokens: float | None = None,
        dtype: object = None,
        gpus: int = 1,
        **kwargs: Any,
    ) -> CellResult | None:
        """Measure ``fn(*args, **kwargs)``; the work arguments say what one call does, for throughput."""
        if timer not in TIMER_NAMES:
            raise ValueError(f"timer={timer!r}; use one of {', '.join(TIMER_NAMES)}")
        chosen_cache = cache or self._session.settings.cache or ("hot" if self.target.is_cpu else "cold")
        if chosen_cache not in CACHE_MODES:
            raise ValueError(f"cache={cache!r}; use cold or hot")
        cache_mode = cast(CacheMode, chosen_cache)
        work = Work(flops, bytes, items, tokens, _dtype_name(dtype), gpus)
        self._claim()

        def call() -> Any:
            return fn(*args, **kwargs)

        if not self.enabled:
            call()  # pytest-benchmark's disabled mode: one untimed call
            return None
        # a first call may compile for minutes and one batch may block: a ticker thread beats through both
        with ticking(self._request.config, self._request.node.nodeid, "warm-up") as heartbeat:
            first = call()
            chosen = choose_timer(timer, first, on_gpu=not self.target.is_cpu)
            timer_used = make_timer(chosen, cache_mode)
            measurement = measure(call, timer_used, self.policy,
                                  lambda *progress: self._heartbeat(heartbeat, *progress),
                                  warmth=self._session.warmth, device=timer_used.device_uuid or self.target.id)
        if timer_used.device_uuid:
            self.extra_info.setdefault("torch_device_uuid", timer_used.device_uuid)
        self.extra_info.setdefault("timer_resolution_s", timer_used.resolution_s)
        return self._finish(measurement, work, {})

    def record(
        self,
        samples_s: Sequence[float],
        *,
        loops: int = 1,
        timer: str = "external",
        flops: float | None = None,
        bytes: float | None = None,  # noqa: A002
        items: float | None = None,
        tokens: float | None = None,
        dtype: object = None,
        gpus: int = 1,
        metrics: Mapping[str, float] | None = None,
    ) -> CellResult | None:
        """Record samples measured elsewhere (a server, a subprocess, a remote container), in seconds.

        Each sample is the time of ``loops`` calls; ``metrics`` are extra figures (e.g. TTFT p99) kept
        in extra_info and shown in the summary.
        """
        totals = [float(s) for s in samples_s]
        if not totals:
            raise ValueError("gpubench.record() needs at least one sample")
        if any(not (s >= 0 and s != float("inf")) for s in totals):
            raise ValueError("gpubench.record(): samples must be finite seconds >= 0")
        if not isinstance(loops, int) or loops < 1:
            raise ValueError(f"loops={loops!r}; use a whole number >= 1")
        work = Work(flops, bytes, items, tokens, _dtype_name(dtype), gpus)
        self._claim()
        if not self.enabled:
            return None
        measurement = Measurement(tuple(totals), loops, timer, "n/a", 0, 0.0, 0.0, f"{len(totals)} samples recorded")
        return self._finish(measurement, work, dict(metrics or {}))

    def flag(self, text: str) -> None:
        """Mark this cell's figure with what a reader must know before trusting it, one line that starts with
        a short name: ``gpubench.flag("cpu-starved: GPU idle 83 % waiting on the DataLoader")``. It is shown
        beside the sampler's own flags: the row's ``!`` and a note under the table, and ``flags`` in the
        saved extra_info. Before or after the measurement, any number of times."""
        if not isinstance(text, str) or not text.strip() or "\n" in text.strip():
            raise ValueError(f"gpubench.flag({text!r}): give one non-empty line, e.g. 'cpu-starved: GPU idle 83 %'")
        self._flags.append(text.strip())
        node = self._request.node
        record = node.stash.get(RECORD_KEY, None)
        if record is not None:  # flagged after measuring: the record still waits here for its call report
            node.stash[RECORD_KEY] = record.with_details(**{CELL_FLAGS_KEY: list(self._flags)})

    # -- internals ---------------------------------------------------------------------------------

    def _claim(self) -> None:
        if self._used:
            raise RuntimeError("gpubench measures once per test; parametrize the test to measure more")
        self._used = True

    @staticmethod
    def _heartbeat(heartbeat: Heartbeat, phase: str, samples: int, elapsed_s: float, stdrel: float) -> None:
        """measure()'s progress after each batch; the line itself comes from the ticker, on time."""
        heartbeat.set_phase("sampling")
        heartbeat.beat(f"{samples} samples, stdrel {'n/a' if math.isinf(stdrel) else f'{stdrel:.2%}'}")

    def _finish(self, measurement: Measurement, work: Work, metrics: dict[str, float]) -> CellResult:
        summary = measurement.summary
        details: dict[str, Any] = {
            "target": self.target.id,
            "timer": measurement.timer,
            "cache": measurement.cache,
            "loops": measurement.loops,
            "warmup_calls": measurement.warmup_calls,
            "warmup_s": measurement.warmup_s,
            "warmup_stop": measurement.warmup_stop,
            # warmup_s less first_call_s (the test's own compile and allocation), plus measure_s: the plugin's
            # time on this cell
            "first_call_s": measurement.first_call_s,
            "measure_s": measurement.elapsed_s,
            "stop_reason": measurement.stop_reason,
            "stdrel_target": self.policy.stdrel,
            "min_samples": self.policy.min_samples,
            "stdrel": summary.stdrel if math.isfinite(summary.stdrel) else None,  # JSON has no Infinity
            "p90": summary.p90,
            "p95": summary.p95,
            "p99": summary.p99,
            "metrics": {**throughput_metrics(work, summary.median, self.target), **metrics},
            "work": {k: v for k, v in vars(work).items() if v is not None},
        }
        if self.target.price_per_hour is not None:
            details["usd_per_hour"] = self.target.price_per_hour
        node = self._request.node
        details.update(comparison_details(node))
        if self.target.is_cpu:
            details["cpu_cores"] = sorted(os.sched_getaffinity(0))
        lease = node.stash.get(LEASE_KEY, None)
        if lease is not None and lease.uuids:
            details["gpu_uuids"] = list(lease.uuids)
            details["gpus_held_from"] = lease.acquired_at
            details["gpus_held_until_at_least"] = time.time()
            details["gpus_waited_s"] = lease.waited_s
        details.update(self.extra_info)
        if self._flags:
            details[CELL_FLAGS_KEY] = list(self._flags)
        callspec = getattr(node, "callspec", None)
        marker = node.get_closest_marker("benchmark")
        record = CellRecord(
            nodeid=node.nodeid,
            name=node.name,
            group=marker.kwargs.get("group") if marker else None,
            param=callspec.id if callspec else None,
            params=jsonable_params(callspec.params if callspec else None),
            totals_s=measurement.totals_s,
            loops=measurement.loops,
            timer=measurement.timer,
            extra_info={GPUBENCH_KEY: details},
            host=describe_host(self._session.machine_info()),
        )
        # produced here; stored, judged and reported by the process that owns pytest-benchmark
        node.stash[RECORD_KEY] = record
        return CellResult(record)


def comparison_details(item: pytest.Item) -> dict[str, Any]:
    """Where a cell stands in its comparison: its commit and variant, the variant it is compared with,
    and the key its comparison's cells share (what the speed-up report groups by)."""
    params = cell_params(item)
    variant, commit = params.get(VARIANT_PARAM), params.get(COMMIT_PARAM)
    if not isinstance(variant, Variant):
        return {}
    out: dict[str, Any] = {"variant": variant.name}
    if isinstance(commit, Commit):
        out["commit"] = commit.name
        out["baseline_variant"] = commit.baseline.name
    else:
        marker = item.get_closest_marker("variants")
        table = get_session(item.config).matrix.variants
        declared = [table.get(str(n), Variant(str(n))) for n in marker.args] if marker else list(table.values())
        if declared:
            out["baseline_variant"] = baseline_of(declared).name
    key = comparison_key(item)
    if key is not None:
        out["comparison"] = "::".join(key)
    return out


@pytest.fixture
def gpubench_target(request: pytest.FixtureRequest, gpubench_commit: Commit | None,
                    gpubench_variant: Variant | None) -> Iterator[Target]:
    """The cell's GPU target (``H200:1``, ``cpu``), parametrized from --gpu. Under xdist the cell holds its
    GPUs (lock files) from here to its teardown, so no other worker uses them meanwhile."""
    param = getattr(request, "param", None)
    if not isinstance(param, Target):
        raise RuntimeError(f"{TARGET_PARAM} is parametrized by pytest-gpubench; do not request it outside a benchmark")
    session = get_session(request.config)
    try:
        lease_context = session.local.lease(param, request.node.nodeid)
        lease = lease_context.__enter__()
    except GpuLockTimeout as error:
        pytest.fail(str(error), pytrace=False)
    request.node.stash[LEASE_KEY] = lease
    try:
        yield param
    finally:
        lease_context.__exit__(None, None, None)


@pytest.fixture
def gpubench_variant(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Variant | None:
    """The cell's variant (compares equal to its name), None where the cell has none; its env is set for
    the test's duration."""
    chosen = getattr(request, "param", None)
    if chosen is None:
        return None
    if not isinstance(chosen, Variant):
        raise RuntimeError(f"{VARIANT_PARAM} is parametrized by pytest-gpubench; do not parametrize it yourself")
    for name, value in chosen.env.items():
        monkeypatch.setenv(name, value)
    return chosen


@pytest.fixture
def gpubench_commit(request: pytest.FixtureRequest) -> Commit | None:
    """The cell's commit, where the run declares commits; None otherwise."""
    chosen = getattr(request, "param", None)
    return chosen if isinstance(chosen, Commit) else None


@pytest.fixture
def gpubench(request: pytest.FixtureRequest, gpubench_target: Target) -> GpuBench:
    """Measure this cell: ``gpubench(fn, *args, flops=..., bytes=..., dtype=...)``."""
    function = getattr(request.node, "function", None)
    if function is not None and "benchmark" in inspect.signature(function).parameters:
        # both would store a result under the test's name
        pytest.fail(f"{request.node.nodeid}: use either the benchmark or the gpubench fixture, not both", pytrace=False)
    return GpuBench(request, gpubench_target, get_session(request.config))
