"""How right are llm_load's TTFT and ITL? Against tests/servers/stream_server.py (50 ms to the first token,
then one every 10 ms), all requests sent at once, the client pinned to one core and the server to another.

    python benchmarks/loadgen_accuracy.py --concurrency 1 256 1024 [--tokens 64] [--processes 1] [--repeats 3]
        [--json accuracy.json]

Truth comes from the server: it reports when it wrote each token (perf_counter, one clock host-wide), so
for every request  client TTFT - (server's first write - client's send)  is the client's own error, and
likewise for each inter-token gap. The table gives medians, the server's lateness against its schedule,
the event loop's lag, and whether the self-check called the run client-bound.

When vLLM's benchmark client is importable (its wheel unpacked with --no-deps on the path is enough), each run is
followed by the same load sent through vLLM's request function, driven as `vllm bench serve` drives it; its
TTFT and ITL medians are printed beside ours. The server gives no per-request truth for that client, so compare
it with the nominal 50 / 10 ms and with the server's lateness.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_gpubench.serving.loadgen import LoadSpec, run_load  # noqa: E402
from pytest_gpubench.serving.metrics import compute_metrics  # noqa: E402
from pytest_gpubench.serving.ports import free_port  # noqa: E402
from pytest_gpubench.serving.selfcheck import self_check  # noqa: E402

from vllm_client import vllm_client_importable, vllm_session  # noqa: E402 - beside this script

SERVER = ROOT / "tests" / "servers" / "stream_server.py"


async def _vllm_client_run(port: int, concurrency: int, tokens: int) -> tuple[list[float], list[float], int]:
    """vLLM's request function, all requests at once, on a session built like vllm/benchmarks/serve.py's."""
    from vllm.benchmarks.lib.endpoint_request_func import RequestFuncInput, async_request_openai_completions

    async with vllm_session(concurrency) as session:
        request = RequestFuncInput(prompt="hello", api_url=f"http://127.0.0.1:{port}/v1/completions", prompt_len=1,
                                   output_len=tokens, model="")
        await async_request_openai_completions(request, session)  # vLLM's initial single-prompt test run
        outputs = await asyncio.gather(*(async_request_openai_completions(request, session) for _ in range(concurrency)))
    ok = [o for o in outputs if o.success]
    return [o.ttft for o in ok], [gap for o in ok for gap in o.itl], len(outputs) - len(ok)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 256, 1024])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--client-core", type=int, default=0)
    parser.add_argument("--server-workers", type=int, default=1, help="server processes; they get every core but the client's")
    parser.add_argument("--repeats", type=int, default=1, help="runs per concurrency")
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    args = parser.parse_args()
    with_vllm = vllm_client_importable()
    if not with_vllm:
        print("vllm not importable here: vLLM's client is NOT run beside ours")

    port = free_port()
    cores = os.cpu_count() or 1
    client_cores = {(args.client_core + i) % cores for i in range(args.processes)}  # one core per client process
    server_cores = set(range(cores)) - client_cores or client_cores
    server = subprocess.Popen(["taskset", "-c", ",".join(map(str, sorted(server_cores))), sys.executable, str(SERVER),
                               "--port", str(port), "--ttft-ms", "50", "--itl-ms", "10", "--workers", str(args.server_workers)],
                              stdout=subprocess.PIPE, start_new_session=True)
    assert server.stdout is not None
    server.stdout.readline()
    os.sched_setaffinity(0, client_cores)
    print(f"client on cores {sorted(client_cores)} of {cores}, {args.processes} process(es); server: {args.server_workers} "
          f"process(es) on cores {sorted(server_cores)}; "
          f"{args.tokens} tokens a request; all requests at once")
    print(f"{'C':>5} {'TTFT med':>9} {'true':>7} {'err med':>8} {'err p99':>8} {'ITL med':>8} {'true':>7} "
          f"{'err med':>8} {'server late p99':>15} {'loop lag p99':>12}  self-check")
    runs = []
    try:
        for concurrency in [c for c in args.concurrency for _ in range(args.repeats)]:
            spec = LoadSpec(num_requests=concurrency, max_tokens=args.tokens, warmup_requests=min(concurrency, 8),
                            processes=args.processes)
            outcome = run_load("127.0.0.1", port, ["hello"], spec)
            metrics = compute_metrics(outcome.results)
            done = [r for r in outcome.results if r.ok]
            ttft_err, itl_err, true_ttft, true_itl, late = [], [], [], [], []
            for r in done:
                sent = r.usage["token_sent_at"]  # type: ignore[index]
                true_ttft.append(sent[0] - r.sent_at)
                ttft_err.append(r.ttft - (sent[0] - r.sent_at))
                true_itl += [b - a for a, b in zip(sent, sent[1:])]
                itl_err += [c - t for c, t in zip(r.itls, [b - a for a, b in zip(sent, sent[1:])])]
                late.append(r.usage["server_late_ms"])  # type: ignore[index]
            check = self_check(outcome)
            ms = 1e3
            print(f"{concurrency:>5} {metrics.ttft.median:>9.2f} {statistics.median(true_ttft) * ms:>7.2f} "
                  f"{statistics.median(ttft_err) * ms:>8.3f} {sorted(ttft_err)[int(0.99 * (len(ttft_err) - 1))] * ms:>8.3f} "
                  f"{metrics.itl.median:>8.3f} {statistics.median(true_itl) * ms:>7.3f} {statistics.median(itl_err) * ms:>8.3f} "
                  f"{sorted(late)[int(0.99 * (len(late) - 1))]:>15.2f} {check.loop_lag_p99_ms:>12.2f}  "
                  f"{'CLIENT-BOUND: ' + check.warning if check.client_bound else 'ok'}"
                  + (f"  failed {metrics.failed}: {metrics.first_errors[:1]}" if metrics.failed else ""), flush=True)
            run = {"concurrency": concurrency, "ttft_median_ms": metrics.ttft.median,
                   "true_ttft_median_ms": statistics.median(true_ttft) * ms,
                   "ttft_error_median_ms": statistics.median(ttft_err) * ms,
                   "ttft_error_p99_ms": sorted(ttft_err)[int(0.99 * (len(ttft_err) - 1))] * ms,
                   "itl_median_ms": metrics.itl.median, "true_itl_median_ms": statistics.median(true_itl) * ms,
                   "itl_error_median_ms": statistics.median(itl_err) * ms,
                   "server_late_p99_ms": sorted(late)[int(0.99 * (len(late) - 1))],
                   "loop_lag_p99_ms": check.loop_lag_p99_ms, "client_bound": check.client_bound,
                   "warning": check.warning, "failed": metrics.failed}
            if with_vllm:
                time.sleep(0.5)  # let the server drain before the next burst
                ttfts, itls, failed = asyncio.run(_vllm_client_run(port, concurrency, args.tokens))
                run["vllm_client_ttft_median_ms"] = statistics.median(ttfts) * ms
                run["vllm_client_itl_median_ms"] = statistics.median(itls) * ms
                run["vllm_client_failed"] = failed
                print(f"{'':>5} vLLM's client, same load: TTFT median {run['vllm_client_ttft_median_ms']:.2f} ms, "
                      f"ITL median {run['vllm_client_itl_median_ms']:.3f} ms, failed {failed}", flush=True)
            runs.append(run)
            time.sleep(0.5)
    finally:
        os.killpg(server.pid, signal.SIGKILL)
    if args.json:
        args.json.write_text(json.dumps({"cores": cores, "server_workers": args.server_workers,
                                         "tokens": args.tokens, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
