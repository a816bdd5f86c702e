"""Serving metrics with vLLM's definitions (``vllm bench serve``), named so nobody guesses what they include.

- TTFT: request sent (connection already open) -> first chunk that carries content.
- ITL: gaps between successive content chunks (a chunk may carry several tokens; the gap is per chunk).
- TPOT: (E2EL - TTFT) / (output_tokens - 1), output tokens from the server's ``usage``; excludes the first token.
- E2EL: request sent -> last byte of the response.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..metrics import PERCENTILES, distribution_key


@dataclass(frozen=True)
class RequestResult:
    """One request as the client saw it; times are perf_counter seconds (one clock for every process)."""

    sent_at: float
    chunk_times: tuple[float, ...] = ()  # arrival of each content-carrying chunk
    finished_at: float = 0.0
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    error: str | None = None
    connect_s: float = 0.0  # connection set-up before sending: not inside TTFT, shown on its own
    usage: Mapping[str, object] | None = None  # the server's usage object as sent

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.chunk_times)

    @property
    def ttft(self) -> float:
        return self.chunk_times[0] - self.sent_at

    @property
    def e2el(self) -> float:
        return self.finished_at - self.sent_at

    @property
    def itls(self) -> list[float]:
        return [b - a for a, b in zip(self.chunk_times, self.chunk_times[1:])]

    @property
    def tpot(self) -> float | None:
        if not self.output_tokens or self.output_tokens < 2:
            return None
        return (self.e2el - self.ttft) / (self.output_tokens - 1)


@dataclass(frozen=True)
class Distribution:
    """In milliseconds."""

    mean: float
    median: float
    std: float
    percentiles: Mapping[int, float]

    @classmethod
    def of_seconds(cls, values: Sequence[float]) -> Distribution | None:
        if not values:
            return None
        ms = np.asarray(values, dtype=float) * 1e3
        return cls(float(ms.mean()), float(np.median(ms)), float(ms.std()),
                   {p: float(np.percentile(ms, p)) for p in PERCENTILES})

    def as_dict(self, prefix: str) -> dict[str, float]:
        # the keys are the registry's (pytest_gpubench/metrics.py), which the reports read them by
        out = {distribution_key(prefix, "mean"): self.mean, distribution_key(prefix, "median"): self.median,
               distribution_key(prefix, "std"): self.std}
        out.update({distribution_key(prefix, f"p{p}"): v for p, v in self.percentiles.items()})
        return out


@dataclass(frozen=True)
class Slo:
    """Goodput counts the requests that meet every bound given (milliseconds)."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2el_ms: float | None = None

    def met_by(self, r: RequestResult) -> bool:
        if self.ttft_ms is not None and r.ttft * 1e3 > self.ttft_ms:
            return False
        tpot = r.tpot
        if self.tpot_ms is not None and (tpot is None or tpot * 1e3 > self.tpot_ms):
            return False
        return not (self.e2el_ms is not None and r.e2el * 1e3 > self.e2el_ms)


@dataclass(frozen=True)
class ServingMetrics:
    completed: int
    failed: int
    first_errors: tuple[str, ...]
    duration_s: float
    request_throughput: float  # completed requests / s
    output_token_throughput: float  # usage.completion_tokens / s
    total_token_throughput: float  # (prompt + completion tokens) / s
    goodput: float | None  # requests meeting the SLO / s
    ttft: Distribution | None
    tpot: Distribution | None
    itl: Distribution | None
    e2el: Distribution | None
    missing_usage: int  # completed requests whose server sent no usage: their tokens are not counted
    extra: Mapping[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        out: dict[str, float] = {
            "completed": self.completed, "failed": self.failed, "duration_s": self.duration_s,
            "request_throughput": self.request_throughput, "output_token_throughput": self.output_token_throughput,
            "total_token_throughput": self.total_token_throughput, "missing_usage": self.missing_usage,
        }
        if self.goodput is not None:
            out["goodput"] = self.goodput
        for name in ("ttft", "tpot", "itl", "e2el"):
            dist = getattr(self, name)
            if dist is not None:
                out.update(dist.as_dict(name))
        out.update(self.extra)
        return out


def compute_metrics(results: Sequence[RequestResult], slo: Slo | None = None, max_errors: int = 5) -> ServingMetrics:
    done = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    if results:
        start = min(r.sent_at for r in results)
        end = max((r.finished_at for r in results), default=start)
        duration = max(end - start, 1e-9)
    else:
        duration = 1e-9
    with_usage = [r for r in done if r.output_tokens is not None]
    output_tokens = sum(r.output_tokens or 0 for r in with_usage)
    prompt_tokens = sum(r.prompt_tokens or 0 for r in with_usage)
    tpots = [t for t in (r.tpot for r in done) if t is not None]
    return ServingMetrics(
        completed=len(done),
        failed=len(failed),
        first_errors=tuple((r.error or "no content in the response")[:300] for r in failed[:max_errors]),
        duration_s=duration,
        request_throughput=len(done) / duration,
        output_token_throughput=output_tokens / duration,
        total_token_throughput=(output_tokens + prompt_tokens) / duration,
        goodput=(sum(1 for r in done if slo.met_by(r)) / duration) if slo else None,
        ttft=Distribution.of_seconds([r.ttft for r in done]),
        tpot=Distribution.of_seconds(tpots),
        itl=Distribution.of_seconds([gap for r in done for gap in r.itls]),
        e2el=Distribution.of_seconds([r.e2el for r in done]),
        missing_usage=len(done) - len(with_usage),
    )
