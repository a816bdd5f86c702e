"""The load generator and its metrics: vLLM's definitions, arrival processes, streams with and without
[DONE] and usage, errors, and the llm_load fixture feeding pytest-benchmark."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_gpubench.serving.loadgen import LoadSpec, arrival_offsets, run_load
from pytest_gpubench.serving.metrics import RequestResult, Slo, compute_metrics
from pytest_gpubench.serving.ports import free_port

STREAM_SERVER = Path(__file__).parent / "servers" / "stream_server.py"
FAKE_SERVER = Path(__file__).parent / "servers" / "fake_openai_server.py"


# --- metric definitions on known timestamps -------------------------------------------------------------

def test_metric_definitions_follow_vllm() -> None:
    # sent at 0; content chunks at 50, 60, 75 ms; finished at 80 ms; 4 tokens by usage (one chunk carried two)
    r = RequestResult(0.0, (0.050, 0.060, 0.075), 0.080, prompt_tokens=10, output_tokens=4)
    assert r.ttft == pytest.approx(0.050)
    assert r.e2el == pytest.approx(0.080)
    assert r.itls == pytest.approx([0.010, 0.015])
    assert r.tpot == pytest.approx((0.080 - 0.050) / 3)  # excludes the first token
    metrics = compute_metrics([r, RequestResult(0.0, (), 0.01, error="HTTP 422: bad field")], Slo(ttft_ms=60))
    assert metrics.completed == 1 and metrics.failed == 1
    assert metrics.first_errors == ("HTTP 422: bad field",)
    assert metrics.output_token_throughput == pytest.approx(4 / 0.080)
    assert metrics.total_token_throughput == pytest.approx(14 / 0.080)
    assert metrics.goodput == pytest.approx(1 / 0.080)
    assert metrics.ttft.median == pytest.approx(50.0)
    assert metrics.itl.percentiles[50] == pytest.approx(12.5)


def test_percentiles_are_ordered_and_slo_filters() -> None:
    results = [RequestResult(0.0, (0.01 * (i + 1), 0.01 * (i + 2)), 0.01 * (i + 3), output_tokens=2) for i in range(100)]
    metrics = compute_metrics(results, Slo(ttft_ms=50.5))
    p = metrics.ttft.percentiles
    assert metrics.ttft.median <= p[90] <= p[95] <= p[99]
    assert metrics.goodput == pytest.approx(5 / metrics.duration_s)  # TTFTs are 10, 20, ... ms: five are <= 50.5
    assert metrics.missing_usage == 0


def test_arrival_processes() -> None:
    assert arrival_offsets(LoadSpec(num_requests=5)) == [0.0] * 5
    fixed = arrival_offsets(LoadSpec(num_requests=5, request_rate=10, arrival="fixed"))
    assert fixed == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    for burstiness in (0.25, 1.0, 4.0):
        offsets = arrival_offsets(LoadSpec(num_requests=20001, request_rate=100, burstiness=burstiness))
        gaps = [b - a for a, b in zip(offsets, offsets[1:])]
        mean = statistics.fmean(gaps)
        assert mean == pytest.approx(0.01, rel=0.05)
        assert statistics.pstdev(gaps) / mean == pytest.approx(burstiness ** -0.5, rel=0.08)  # gamma: CV = 1/sqrt(k)


def test_bad_spec_is_refused() -> None:
    with pytest.raises(ValueError, match="api="):
        LoadSpec(api="grpc")
    with pytest.raises(ValueError, match="request_rate"):
        LoadSpec(request_rate=0)


# --- against real servers ----------------------------------------------------------------------------------

def start(script: Path, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen([sys.executable, str(script), "--port", str(port), *args], stdout=subprocess.PIPE)
    assert process.stdout is not None
    while b"ready" not in process.stdout.readline():
        pass
    return process, port


@pytest.fixture
def stream_server(request: pytest.FixtureRequest) -> Iterator[int]:
    process, port = start(STREAM_SERVER, *getattr(request, "param", ()))
    yield port
    process.kill()
    process.wait()


@pytest.mark.parametrize("stream_server", [(), ("--no-done",), ("--close",)], indirect=True, ids=["done", "no-done", "close"])
def test_streamed_completions_are_timed_and_counted(stream_server: int) -> None:
    outcome = run_load("127.0.0.1", stream_server, ["hello"], LoadSpec(num_requests=8, max_tokens=16, max_concurrency=4))
    metrics = compute_metrics(outcome.results)
    assert metrics.completed == 8 and metrics.failed == 0
    assert all(r.output_tokens == 16 and len(r.chunk_times) == 16 for r in outcome.results)
    assert all(r.ttft < r.e2el for r in outcome.results)
    # Held against what the server did, by its own clock (perf_counter: one clock for every process on the
    # host), not against its nominal 50 ms / 10 ms: on a loaded 2-core machine the server itself runs late.
    written = [r.usage["token_sent_at"] for r in outcome.results if r.usage]
    assert len(written) == 8
    assert metrics.ttft.median >= 49  # the server cannot answer sooner than its schedule
    # TTFT is the first token's arrival: near the server's write of that token (stamped just after the write,
    # so the client may see it first), 10 ms from the next one's
    delays = [r.sent_at + r.ttft - tokens[0] for r, tokens in zip(outcome.results, written)]
    assert -0.004 < statistics.median(delays) < 0.006
    # TPOT spans the first token to the end: it matches the server's own spacing of its 16 tokens
    server_tpot = [(tokens[-1] - tokens[0]) / 15 for tokens in written]
    assert statistics.median(abs((r.tpot or 0) - t) for r, t in zip(outcome.results, server_tpot)) < 0.002
    assert metrics.itl.median >= 0  # defined; its spacing is the parser test's and benchmarks/' subject


@pytest.mark.parametrize("stream_server", [("--no-usage",)], indirect=True)
def test_stream_without_usage_counts_no_tokens_and_says_so(stream_server: int) -> None:
    metrics = compute_metrics(run_load("127.0.0.1", stream_server, ["x"], LoadSpec(num_requests=3, max_tokens=4)).results)
    assert metrics.completed == 3 and metrics.missing_usage == 3
    assert metrics.output_token_throughput == 0 and metrics.tpot is None


def test_chat_api(stream_server: int) -> None:
    outcome = run_load("127.0.0.1", stream_server, [[{"role": "user", "content": "hi"}]],
                       LoadSpec(api="chat", num_requests=2, max_tokens=5))
    assert [len(r.chunk_times) for r in outcome.results] == [5, 5]


def test_a_response_that_is_not_a_stream_is_a_failed_request() -> None:
    process, port = start(FAKE_SERVER)
    try:
        metrics = compute_metrics(run_load("127.0.0.1", port, ["x"], LoadSpec(num_requests=2, max_tokens=4)).results)
    finally:
        process.kill()
        process.wait()
    assert metrics.completed == 0 and metrics.failed == 2
    assert metrics.first_errors[0] == "the response carried no content"


def test_streams_spread_over_processes_keep_one_schedule(stream_server: int) -> None:
    outcome = run_load("127.0.0.1", stream_server, ["a", "b"],
                       LoadSpec(num_requests=6, max_tokens=4, processes=2, request_rate=20, arrival="fixed"))
    metrics = compute_metrics(outcome.results)
    assert metrics.completed == 6
    sends = sorted(r.sent_at for r in outcome.results)
    gaps = [b - a for a, b in zip(sends, sends[1:])]
    assert statistics.median(gaps) == pytest.approx(0.05, abs=0.01)  # interleaved across both processes


# --- the llm_load fixture ----------------------------------------------------------------------------------

def test_llm_load_records_ttft_samples_and_serving_metrics(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_SERVER", str(STREAM_SERVER))
    pytester.makepyfile(
        test_serve="""
        import os
        import sys

        def test_serve(llm_server, llm_load, gpubench):
            server = llm_server("command", argv=[sys.executable, os.environ["STREAM_SERVER"], "--port", "{port}"])
            report = llm_load(server, ["hello"], num_requests=12, max_tokens=8, max_concurrency=4, warmup_requests=2)
            assert report.metrics.completed == 12
        """
    )
    result = pytester.runpytest("--gpu=cpu", "-p", "no:cacheprovider", "--benchmark-json=out.json")
    result.assert_outcomes(passed=1)
    (bench,) = json.loads((pytester.path / "out.json").read_text())["benchmarks"]
    assert bench["fullname"] == "test_serve.py::test_serve[cpu]"
    assert len(bench["stats"]["data"]) == 12
    assert 0.045 < bench["stats"]["median"] < 0.07  # TTFT, in seconds
    details = bench["extra_info"]["gpubench"]
    assert details["timer"] == "llm_load:ttft"
    metrics = details["metrics"]
    assert metrics["completed"] == 12 and metrics["failed"] == 0
    assert metrics["ttft_median_ms"] <= metrics["ttft_p99_ms"] <= metrics["e2el_p99_ms"]
    assert metrics["output_token_throughput"] > 0
    assert "client_loop_lag_p99_ms" in metrics


# --- the HTTP/SSE parser, fed a response cut at random places ------------------------------------------

def _sse(payload: str) -> bytes:
    data = f"data: {payload}\n\n".encode()
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    + _sse('{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}')  # role only: no content
    + _sse('{"choices": [{"index": 0, "delta": {"content": "He"}}]}')  # spaced JSON
    + _sse('{"choices":[{"index":0,"delta":{"content":"\\"llo"}}]}')  # starts with an escaped quote
    + _sse('{"choices":[{"index":0,"delta":{"reasoning_content":"hmm"}}]}')
    + _sse('{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":7}}')
    + _sse("[DONE]")
    + b"0\r\n\r\n"
)


def feed_response(response: bytes, cuts: list[int], chat: bool = True) -> tuple[Any, float]:
    """Drive one connection's parser with ``response`` delivered in pieces cut at ``cuts``."""
    import asyncio

    from pytest_gpubench.serving.loadgen import _HttpStream, _Response

    class Transport:
        def write(self, data: bytes) -> None:
            pass

        def close(self) -> None:
            pass

    async def go() -> tuple[Any, float]:
        stream = _HttpStream()
        stream.connection_made(Transport())  # type: ignore[arg-type]
        answer = _Response(chat)
        done = stream.send(b"", answer)
        edges = [0, *sorted(cuts), len(response)]
        for a, b in zip(edges, edges[1:]):
            stream.data_received(response[a:b])
        return answer, await done

    return asyncio.run(go())


def feed(response: bytes, cuts: list[int], chat: bool = True) -> RequestResult:
    answer, finished = feed_response(response, cuts, chat)
    return RequestResult(0.0, tuple(answer.chunk_times), finished, answer.prompt_tokens, answer.output_tokens, answer.error)


def test_parser_gives_the_same_answer_however_the_bytes_are_cut() -> None:
    import random

    rng = random.Random(7)
    for trial in range(300):
        cuts = rng.sample(range(1, len(RESPONSE)), rng.randint(0, 40)) if trial else []
        result = feed(RESPONSE, cuts)
        assert result.error is None
        assert len(result.chunk_times) == 3  # "He", "\"llo", and the reasoning content; not the role-only delta
        assert (result.prompt_tokens, result.output_tokens) == (3, 7)


def test_parser_reports_error_events_and_http_errors() -> None:
    error_event = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + _sse('{"error":{"message":"model overloaded"}}') + b"0\r\n\r\n")
    assert "model overloaded" in (feed(error_event, [30]).error or "")
    status = b"HTTP/1.1 422 Unprocessable\r\nContent-Length: 17\r\n\r\n{\"detail\":\"bad\"}\n"
    answer, _ = feed_response(status, [20], chat=False)
    assert (answer.status, bytes(answer.error_body)) == (422, b'{"detail":"bad"}\n')
