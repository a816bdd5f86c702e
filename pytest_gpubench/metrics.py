"""The metric registry: every figure pytest-gpubench reports, once, with its key, unit, title and definition.

The fixtures name what they record with these keys (``distribution_key`` builds the serving percentiles'
names), and the terminal table, the JUnit properties, ``results.csv`` and ``report.md`` read units, titles and
definitions from here, so a figure is called the same everywhere and nobody has to guess what it includes.
A metric a user records that is not in the registry is still reported, under its own key, with no unit.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

PERCENTILES = (50, 90, 95, 99)
DISTRIBUTION_STATS = ("mean", "median", "std", *(f"p{p}" for p in PERCENTILES))


@dataclass(frozen=True)
class Metric:
    key: str
    unit: str  # "" for counts and flags
    title: str  # short, for table headers
    definition: str
    kind: str  # cell | rate | collective | serving | client | cost: which table and plots show it
    higher_is_better: bool | None = None


@dataclass(frozen=True)
class ServingDistribution:
    """A serving latency measured per request (or per chunk), reported as DISTRIBUTION_STATS in ms."""

    name: str
    title: str
    definition: str


SERVING_DISTRIBUTIONS = (
    ServingDistribution("ttft", "TTFT", "time to first token: request sent (connection already open) -> first chunk that "
                 "carries content"),
    ServingDistribution("tpot", "TPOT", "time per output token after the first: (E2EL - TTFT) / (output tokens - 1), tokens "
                 "from the server's usage"),
    ServingDistribution("itl", "ITL", "inter-chunk latency: the gap between successive content chunks (a chunk may carry "
                 "several tokens)"),
    ServingDistribution("e2el", "E2EL", "end-to-end latency: request sent -> last byte of the response"),
)

_STAT_WORDS = {"mean": "mean", "median": "median", "std": "standard deviation",
               **{f"p{p}": f"{p}th percentile" for p in PERCENTILES}}


def distribution_key(name: str, stat: str) -> str:
    """The key of one statistic of a serving distribution: ``distribution_key("ttft", "p99") == "ttft_p99_ms"``."""
    if stat not in DISTRIBUTION_STATS:
        raise ValueError(f"{stat!r} is not a distribution statistic; use one of {', '.join(DISTRIBUTION_STATS)}")
    return f"{name}_{stat}_ms"


def _distribution_metrics() -> Iterator[Metric]:
    for dist in SERVING_DISTRIBUTIONS:
        for stat in DISTRIBUTION_STATS:
            yield Metric(distribution_key(dist.name, stat), "ms", f"{dist.title} {stat}",
                         f"{_STAT_WORDS[stat]} over the requests of the {dist.definition}", "serving", False)


_METRICS: tuple[Metric, ...] = (
    # every cell, from its raw samples (a sample is one call, or one request for serving cells)
    Metric("median_s", "s", "median", "median of the cell's samples: the time of one call (of one request's recorded "
           "latency for serving cells)", "cell", False),
    Metric("mean_s", "s", "mean", "mean of the cell's samples", "cell", False),
    Metric("min_s", "s", "min", "fastest sample", "cell", False),
    Metric("max_s", "s", "max", "slowest sample", "cell", False),
    Metric("p90_s", "s", "p90", "90th percentile of the samples", "cell", False),
    Metric("p95_s", "s", "p95", "95th percentile of the samples", "cell", False),
    Metric("p99_s", "s", "p99", "99th percentile of the samples", "cell", False),
    Metric("stdrel_pct", "%", "stdrel", "relative standard error of the median (NVBench's noise figure)", "cell", False),
    Metric("samples", "", "samples", "how many samples were taken (each the mean of `loops` calls)", "cell"),
    Metric("loops", "", "loops", "calls timed together in one sample", "cell"),
    Metric("rounds", "", "rounds", "rounds the cell was measured in, each set up and warmed anew", "cell"),
    # throughput from the median and the work one call declares (gpubench(fn, flops=..., bytes=...))
    Metric("tflops", "TFLOP/s", "TFLOP/s", "declared floating-point operations per call / median time", "rate", True),
    Metric("pct_peak_tflops", "%", "%peak", "TFLOP/s as a share of the datasheet's dense peak for the dtype, over "
           "the GPUs the work is spread on", "rate", True),
    Metric("gbps", "GB/s", "GB/s", "declared bytes moved per call (inputs read once, outputs written once) / median "
           "time", "rate", True),
    Metric("pct_peak_gbps", "%", "%peak BW", "GB/s as a share of the datasheet's memory bandwidth", "rate", True),
    Metric("items_per_s", "items/s", "items/s", "declared items per call / median time", "rate", True),
    Metric("tokens_per_s", "tok/s", "tok/s", "declared tokens per call / median time (generation cells)", "rate", True),
    # training steps fed by a data loader (bench_suites/test_dataloader.py)
    Metric("device_idle_pct", "%", "idle %", "share of the timed steps' wall time the device had no step's work: "
           "GPU, 1 - (CUDA-event time of each step's work, summed) / (wall time on the device's clock); CPU, time the "
           "loop waited for the next batch / wall time", "rate", False),
    Metric("device_step_ms", "ms", "step ms", "median time of one step's own work (copy in, forward, backward, "
           "optimizer) on the device's clock, loader wait excluded", "rate", False),
    Metric("samples_per_s", "samples/s", "samples/s", "training samples of the timed steps / their wall time",
           "rate", True),
    # greedy generation (bench_suites/test_generation.py); its samples are the decode steps' host latencies
    Metric("prefill_ms", "ms", "prefill", "prompts in -> the first new tokens on the host, median over the measured "
           "generations", "rate", False),
    *(Metric(f"per_token_p{p}_ms", "ms", f"per-token p{p}", f"{_STAT_WORDS[f'p{p}']} of a decode step's host time: "
             "its call -> its tokens on the host (a sync per token, what a user streaming tokens waits for)", "rate",
             False)
      for p in (50, 90, 99)),
    Metric("decode_tokens_per_s", "tok/s", "decode tok/s", "batch x decode steps / their total host time", "rate",
           True),
    Metric("generation_tokens_per_s", "tok/s", "gen tok/s", "batch x new tokens / (prefill + decode), median over "
           "the generations", "rate", True),
    Metric("compile_s", "s", "compile", "compilation before the first call (JAX: jit lower + compile); 0 for eager "
           "code; not in the samples", "cell", False),
    Metric("first_generation_s", "s", "first gen", "the first generation, lazy initialisation included; not in the "
           "samples", "cell", False),
    Metric("generation_warmup_s", "s", "warm-up gens", "the untimed generations after the first, before the "
           "measured ones", "cell", False),
    Metric("decode_step_device_ms", "ms", "device step", "median time of one decode step on the device's clock, "
           "steps queued back to back (torch: CUDA events; JAX on a GPU: XLA's profiler); on the CPU, the host's",
           "rate", False),
    Metric("decode_step_kernels_ms", "ms", "kernels step", "torch on a GPU: the eager decode step replayed from a "
           "CUDA graph, on CUDA events: its kernels without Python launching them one by one", "rate", False),
    Metric("decode_step_host_overhead_ms", "ms", "host overhead", "per-token p50 - device step: the host's share of "
           "a token's time (dispatch, launches, the tokens' copy to the host)", "rate", False),
    Metric("device_weight_gbps", "GB/s", "weights GB/s", "bytes of the weights a decode step reads (all but the "
           "embedding table) / device step: it reads each once, so against the memory bandwidth this says how near "
           "the step is to its bound", "rate", True),
    Metric("logits_rel_err", "", "logits rel err", "||torch - jax|| / ||jax|| over the prefill logits of the batch, "
           "same weights and prompts", "rate", False),
    Metric("tokens_agree_pct", "%", "tokens agree", "share of the greedy tokens equal in both frameworks (paths may "
           "part after a near-tie in bf16)", "rate", True),
    # collectives (nccl-tests' definitions)
    Metric("algbw_gbps", "GB/s", "algbw GB/s", "algorithm bandwidth: message bytes / median time", "collective", True),
    Metric("busbw_gbps", "GB/s", "busbw GB/s", "bus bandwidth: algbw x 2(n-1)/n for an all-reduce, x (n-1)/n for an "
           "all-gather or a reduce-scatter over n ranks, comparable to one GPU's link bandwidth in one direction",
           "collective", True),
    Metric("ranks", "", "ranks", "processes (one a GPU) taking part", "collective"),
    Metric("size_bytes", "B", "size B", "nccl-tests' size: all-reduce each rank's buffer, all-gather each rank's "
           "output (n x its input), reduce-scatter each rank's input (n x its output)", "collective"),
    Metric("link_peak_gbps", "GB/s", "link GB/s", "one GPU's NVLink bandwidth in one direction: the datasheet's "
           "total for both directions / 2 (SXM parts; H100 and H200: 450)", "collective"),
    Metric("pct_peak_link", "%", "%peak link", "busbw as a share of link_peak_gbps (above 100 only where the NVLink "
           "switch reduces: NVLS, off with NCCL_NVLS_ENABLE=0)", "collective", True),
    # serving (llm_load), vLLM's definitions
    *_distribution_metrics(),
    Metric("completed", "", "completed", "requests that completed with content", "serving", True),
    Metric("failed", "", "failed", "requests that failed or returned no content", "serving", False),
    Metric("duration_s", "s", "duration", "first request sent -> last response finished", "serving"),
    Metric("request_throughput", "req/s", "req/s", "completed requests / duration", "serving", True),
    Metric("output_token_throughput", "tok/s", "out tok/s", "output tokens (server's usage) / duration", "serving",
           True),
    Metric("total_token_throughput", "tok/s", "total tok/s", "prompt + output tokens (server's usage) / duration",
           "serving", True),
    Metric("goodput", "req/s", "goodput", "requests that met every bound of the SLO / duration", "serving", True),
    Metric("missing_usage", "", "no usage", "completed requests whose server sent no usage: their tokens are not "
           "counted", "serving", False),
    Metric("max_concurrency", "", "concurrency", "most requests the load generator kept in flight", "serving"),
    Metric("continuous_batching", "", "cont. batching", "1 when the server batched requests continuously (vLLM and "
           "SGLang always; transformers serve with --continuous-batching), 0 when it served one at a time",
           "serving"),
    # the load generator's self-check
    Metric("client_target_rate", "req/s", "target rate", "request rate asked for (inf: all at once)", "client"),
    Metric("client_achieved_rate", "req/s", "sent rate", "request rate the client achieved", "client"),
    Metric("client_loop_lag_p50_ms", "ms", "loop lag p50", "median lateness of the client's event loop", "client",
           False),
    Metric("client_loop_lag_p99_ms", "ms", "loop lag p99", "99th percentile lateness of the client's event loop",
           "client", False),
    Metric("client_loop_lag_max_ms", "ms", "loop lag max", "worst lateness of the client's event loop", "client",
           False),
    Metric("client_bound", "", "client-bound", "1 when the client, not the server, limited the run", "client", False),
    Metric("client_processes", "", "client procs", "processes the load generator spread its streams over", "client"),
    Metric("client_reruns", "", "client reruns", "times the load was sent again with more client processes because "
           "the client was the bottleneck (llm_load(client_bound='rerun')); the cell holds the last run", "client",
           False),
    # cost
    Metric("gpu_seconds", "GPU-s", "GPU-s", "seconds the cell held its GPUs x their count (Modal: the container's "
           "time)", "cost", False),
    Metric("usd_per_hour", "USD/h", "$/h", "the target's price: list price per GPU-hour x GPUs", "cost", False),
    Metric("cost_usd", "USD", "$", "GPU-seconds x the price per GPU-second (Modal: what the container cost)", "cost",
           False),
    Metric("usd_per_1k_tokens", "USD/1k tok", "$/1k tok", "price of the target for the time it takes to produce "
           "1,000 output tokens at the measured throughput: $/h / 3600 / (tok/s) x 1000", "cost", False),
)

REGISTRY: Mapping[str, Metric] = MappingProxyType({m.key: m for m in _METRICS})


def all_metrics() -> tuple[Metric, ...]:
    """Every registered metric, in the order reports list them."""
    return _METRICS


def metric(key: str) -> Metric | None:
    return REGISTRY.get(key)


def unit_of(key: str) -> str:
    found = REGISTRY.get(key)
    return found.unit if found else ""


def title_of(key: str) -> str:
    found = REGISTRY.get(key)
    return found.title if found else key


def ordered_keys(keys: set[str] | frozenset[str]) -> list[str]:
    """``keys`` in the registry's order, then any unregistered ones (a user's own metrics) by name."""
    known = [m.key for m in _METRICS if m.key in keys]
    return known + sorted(keys - set(known))
