"""How many streamed tokens per second can one client core read? Against a zero-delay streaming server
(tests/servers/stream_server.py --ttft-ms 0 --itl-ms 0, one token an SSE event, 256 tokens a request),
every client pinned to one core and the server on the others, side by side in one run:

- gpubench: pytest_gpubench.serving.loadgen (raw asyncio protocol)
- aiohttp-minimal: a minimal aiohttp reader (session per run, iter_any, the same SSE parsing)
- vllm-client: vLLM's own benchmark request function, when `vllm` is importable here

    python benchmarks/loadgen_capacity.py --concurrency 1 16 256 1024 [--server-workers 3] [--processes 1 2 4]
        [--repeats 3] [--json capacity.json]

Output tokens per second = content chunks received / wall time of the run, per client process. Each run sends
max(C, 1024) requests, at most C at a time. vLLM's client is found on the import path; `vllm` need not be installed
with its dependencies: its wheel unpacked with --no-deps is enough (it needs aiohttp, tqdm and torch).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_gpubench.serving.loadgen import LoadSpec, run_load  # noqa: E402
from pytest_gpubench.serving.ports import free_port  # noqa: E402

from vllm_client import vllm_client_importable, vllm_session  # noqa: E402 - beside this script

SERVER = ROOT / "tests" / "servers" / "stream_server.py"
TOKENS = 256
# At low concurrency one wave of requests lasts about a millisecond; every run sends at least this many requests,
# at most `concurrency` at a time, so each figure covers 262k tokens and a second or more (shorter runs varied 2x
# between repeats on the 16-core GPU host).
MIN_REQUESTS = 1024


def request_count(concurrency: int) -> int:
    return max(concurrency, MIN_REQUESTS)


def gpubench_client(port: int, concurrency: int, processes: int) -> tuple[int, float]:
    spec = LoadSpec(num_requests=request_count(concurrency), max_concurrency=concurrency, max_tokens=TOKENS,
                    processes=processes)
    outcome = run_load("127.0.0.1", port, ["x"], spec)
    chunks = sum(len(r.chunk_times) for r in outcome.results)
    start = min(r.sent_at for r in outcome.results)
    end = max(r.finished_at for r in outcome.results)
    return chunks, end - start


async def _aiohttp_run(port: int, concurrency: int) -> tuple[int, float]:
    import aiohttp

    body = {"model": "", "prompt": "x", "max_tokens": TOKENS, "stream": True}
    url = f"http://127.0.0.1:{port}/v1/completions"
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        slots = asyncio.Semaphore(concurrency)

        async def one() -> int:
            chunks, buffer = 0, b""
            async with slots, session.post(url, json=body) as response:
                async for data in response.content.iter_any():
                    buffer += data
                    while b"\n\n" in buffer:
                        event, buffer = buffer.split(b"\n\n", 1)
                        if event.startswith(b"data: ") and event[6:] != b"[DONE]":
                            message = json.loads(event[6:])
                            if message.get("choices") and message["choices"][0].get("text"):
                                chunks += 1
            return chunks

        start = time.perf_counter()
        counts = await asyncio.gather(*(one() for _ in range(request_count(concurrency))))
        return sum(counts), time.perf_counter() - start


def aiohttp_client(port: int, concurrency: int, processes: int) -> tuple[int, float]:
    return asyncio.run(_aiohttp_run(port, concurrency))


async def _vllm_run(port: int, concurrency: int) -> tuple[int, float]:
    from vllm.benchmarks.lib.endpoint_request_func import RequestFuncInput, async_request_openai_completions

    async with vllm_session(concurrency) as session:  # built as `vllm bench serve` builds it
        slots = asyncio.Semaphore(concurrency)  # as vLLM's limited_request_func does with --max-concurrency

        async def one() -> int:
            request = RequestFuncInput(prompt="x", api_url=f"http://127.0.0.1:{port}/v1/completions", prompt_len=1,
                                       output_len=TOKENS, model="")
            async with slots:
                output = await async_request_openai_completions(request, session)
            # vLLM's client stamps one ITL entry per content chunk after the first.
            return len(output.itl) + 1 if output.success else 0

        start = time.perf_counter()
        counts = await asyncio.gather(*(one() for _ in range(request_count(concurrency))))
        return sum(counts), time.perf_counter() - start


def vllm_client(port: int, concurrency: int, processes: int) -> tuple[int, float]:
    return asyncio.run(_vllm_run(port, concurrency))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 256, 1024])
    parser.add_argument("--server-workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--processes", type=int, nargs="+", default=[1])
    parser.add_argument("--first-client-core", type=int, default=1,
                        help="clients run on the cores from here (core 0 takes most of the host's interrupts)")
    parser.add_argument("--repeats", type=int, default=3, help="each (client, processes, C) runs this many times")
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    clients = {"gpubench": gpubench_client}
    try:
        import aiohttp  # noqa: F401

        clients["aiohttp-minimal"] = aiohttp_client
    except ImportError:
        print("aiohttp not installed: the aiohttp-minimal column is left out")
    if vllm_client_importable():
        clients["vllm-client"] = vllm_client
    else:
        print("vllm not importable here: vLLM's client is NOT in this comparison")
    port = free_port()
    first = args.first_client_core % cores
    client_cores = {(first + i) % cores for i in range(max(args.processes))}
    server_cores = (set(range(cores)) - client_cores) or {cores - 1}
    server = subprocess.Popen(["taskset", "-c", ",".join(map(str, sorted(server_cores))), sys.executable, str(SERVER),
                               "--port", str(port), "--ttft-ms", "0", "--itl-ms", "0", "--workers", str(args.server_workers)],
                              stdout=subprocess.PIPE, start_new_session=True)
    assert server.stdout is not None
    server.stdout.readline()
    print(f"{cores} cores; server: {args.server_workers} process(es) on cores {sorted(server_cores)}; "
          f"clients on cores {sorted(client_cores)}; {TOKENS} tokens a request")
    print(f"{'client':16} {'procs':>5} {'C':>5} {'tokens':>8} {'of':>8} {'seconds':>8} {'tokens/s':>10} "
          f"{'tokens/s/core':>14}")
    runs = []
    try:
        for concurrency in args.concurrency:
            expected = request_count(concurrency) * TOKENS
            for _ in range(args.repeats):
                for name, client in clients.items():
                    for processes in args.processes if name == "gpubench" else [1]:
                        os.sched_setaffinity(0, client_cores if processes > 1 else {first})
                        tokens, seconds = client(port, concurrency, processes)
                        rate = tokens / seconds
                        # A client that lost tokens did not read the streams it is credited with.
                        flag = "" if tokens == expected else "  INCOMPLETE"
                        print(f"{name:16} {processes:>5} {concurrency:>5} {tokens:>8} {expected:>8} {seconds:>8.2f} "
                              f"{rate:>10.0f} {rate / processes:>14.0f}{flag}", flush=True)
                        runs.append({"client": name, "processes": processes, "concurrency": concurrency,
                                     "tokens": tokens, "expected_tokens": expected, "seconds": seconds,
                                     "tokens_per_s": rate, "tokens_per_s_per_core": rate / processes})
    finally:
        os.killpg(server.pid, signal.SIGKILL)
    if args.json:
        args.json.write_text(json.dumps({"cores": cores, "server_workers": args.server_workers,
                                         "server_cores": sorted(server_cores), "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
