"""The load generator: streaming OpenAI requests on raw asyncio connections, timed where bytes arrive.

Why not aiohttp or httpx: each chunk is stamped in ``data_received``, the first moment Python sees it,
with no client-library machinery in between, and connections are opened (and reopened) outside the
timed span, so a burst of requests does not pay its connection set-up inside TTFT (measured with vLLM's
client: +63 ms of TTFT error at 256 concurrent requests). A ticker measures the event loop's lag; when
the client falls behind, the self-check says so, and ``processes=`` spreads streams over processes.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from typing import Any

from .metrics import RequestResult
from .secrets import redact, secret_values

LAG_TICK_S = 0.005
# A non-empty string value: the first character after the opening quote is not the closing one.
TEXT_CONTENT = re.compile(rb'"text"\s*:\s*"[^"]')
CHAT_CONTENT = re.compile(rb'"(?:content|reasoning_content)"\s*:\s*"[^"]')


@dataclass(frozen=True)
class LoadSpec:
    """How to send: vLLM bench serve's knobs."""

    api: str = "completions"  # or "chat"
    model: str = ""
    max_tokens: int = 128
    num_requests: int = 100
    warmup_requests: int = 0  # sent first, left out of the results
    request_rate: float = math.inf  # requests/s; inf sends everything at once
    burstiness: float = 1.0  # gamma shape of inter-arrival times: 1 is Poisson, <1 burstier, >1 steadier
    arrival: str = "poisson"  # or "fixed" (evenly spaced at request_rate)
    max_concurrency: int | None = None
    include_usage: bool = True  # ask for a final usage chunk: token counts come from the server
    extra_body: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"ignore_eos": True} for vLLM
    timeout_s: float = 600.0
    seed: int = 0
    processes: int = 1

    def __post_init__(self) -> None:
        if self.api not in ("completions", "chat"):
            raise ValueError(f"api={self.api!r}; use 'completions' or 'chat'")
        if self.arrival not in ("poisson", "fixed"):
            raise ValueError(f"arrival={self.arrival!r}; use 'poisson' or 'fixed'")
        if self.num_requests < 1 or self.max_tokens < 1 or self.processes < 1:
            raise ValueError("num_requests, max_tokens and processes must be >= 1")
        if not self.request_rate > 0 or self.burstiness <= 0:
            raise ValueError("request_rate and burstiness must be > 0")


@dataclass(frozen=True)
class LoadOutcome:
    results: tuple[RequestResult, ...]
    loop_lag_s: tuple[float, ...]  # how late each ticker wake-up was, every LAG_TICK_S
    target_rate: float
    sent_span_s: float  # first send -> last send
    stopped: str = ""  # why the load ended before every request was sent; empty when all were sent
    unsent: int = 0  # timed requests never sent because the load stopped
    lost_connections: int = 0  # requests whose connection broke or could not be opened: a server dying, often

    @property
    def achieved_rate(self) -> float:
        return (len(self.results) - 1) / self.sent_span_s if self.sent_span_s > 0 and len(self.results) > 1 else math.inf


def arrival_offsets(spec: LoadSpec) -> list[float]:
    """Seconds after the start at which each request is sent."""
    if math.isinf(spec.request_rate):
        return [0.0] * spec.num_requests
    rng = random.Random(spec.seed)
    offsets, now = [], 0.0
    for _ in range(spec.num_requests):
        offsets.append(now)
        if spec.arrival == "fixed":
            now += 1.0 / spec.request_rate
        else:
            now += rng.gammavariate(spec.burstiness, 1.0 / (spec.request_rate * spec.burstiness))
    return offsets


def request_body(spec: LoadSpec, prompt: Any) -> bytes:
    body: dict[str, Any] = {"model": spec.model, "max_tokens": spec.max_tokens, "stream": True}
    if spec.api == "chat":
        body["messages"] = prompt if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
    else:
        body["prompt"] = prompt
    if spec.include_usage:
        body["stream_options"] = {"include_usage": True}
    body.update(spec.extra_body)
    return json.dumps(body).encode()


class _Response:
    """What one streamed response has delivered so far."""

    __slots__ = ("chunk_times", "prompt_tokens", "output_tokens", "error", "status", "error_body", "chat", "usage")

    def __init__(self, chat: bool) -> None:
        self.chunk_times: list[float] = []
        self.prompt_tokens: int | None = None
        self.output_tokens: int | None = None
        self.error: str | None = None
        self.status = 0
        self.error_body = bytearray()
        self.chat = chat
        self.usage: dict[str, Any] | None = None

    def event(self, data: bytes, now: float) -> None:
        """One SSE data payload. Content events, nearly all of them, are recognised without parsing JSON;
        only events that may carry usage or an error are parsed."""
        if b'"usage"' in data or b'"error"' in data:
            self._parsed_event(data, now)
        elif (CHAT_CONTENT if self.chat else TEXT_CONTENT).search(data):
            self.chunk_times.append(now)
        elif data != b"[DONE]" and not data.startswith(b"{"):
            self.error = f"unparseable event: {data[:200]!r}"

    def _parsed_event(self, data: bytes, now: float) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            self.error = f"unparseable event: {data[:200]!r}"
            return
        if message.get("error"):
            self.error = f"server error event: {str(message['error'])[:300]}"
            return
        usage = message.get("usage")
        if usage:
            self.usage = usage
            self.prompt_tokens = usage.get("prompt_tokens")
            self.output_tokens = usage.get("completion_tokens")
        for choice in message.get("choices") or ():
            if self.chat:
                delta = choice.get("delta") or {}
                content = delta.get("content") or delta.get("reasoning_content")
            else:
                content = choice.get("text")
            if content:
                self.chunk_times.append(now)
                return


class _HttpStream(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one streamed request at a time. Stamps time on every read."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.keep_alive = True
        self._done: asyncio.Future[float] | None = None
        self._response: _Response | None = None
        self._buffer = bytearray()
        self._sse = bytearray()
        self._state = "idle"
        self._remaining = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._done is not None and not self._done.done():
            if self._state == "until-close" and self._response is not None:
                self._flush_sse(time.perf_counter(), final=True)
                self._done.set_result(time.perf_counter())
            else:
                self._done.set_exception(ConnectionError(f"connection closed mid-response ({exc or 'EOF'})"))

    def send(self, request: bytes, response: _Response) -> asyncio.Future[float]:
        assert self.transport is not None
        self._response = response
        self._buffer.clear()
        self._sse.clear()
        self._state = "headers"
        self._remaining = 0
        self._done = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self._done

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if self._buffer:
            self._buffer += data
            data = bytes(self._buffer)
            self._buffer.clear()
        try:
            rest = self._parse(data, now)
        except Exception as error:  # a malformed response fails its request, not the run
            rest = b""
            if self._done is not None and not self._done.done():
                self._done.set_exception(error)
        if rest:
            self._buffer += rest

    def _parse(self, data: bytes, now: float) -> bytes:
        """Consume what ``data`` completes; return the unconsumed tail. One pass, no copies of the rest."""
        pos, size = 0, len(data)
        while pos < size:
            state = self._state
            if state == "headers":
                end = data.find(b"\r\n\r\n", pos)
                if end < 0:
                    return data[pos:]
                self._on_headers(data[pos:end].decode("latin-1"))
                pos = end + 4
            elif state == "chunk-size":
                end = data.find(b"\r\n", pos)
                if end < 0:
                    return data[pos:]
                length = int(data[pos:end].split(b";")[0], 16)
                pos = end + 2
                if length == 0:
                    self._state = "trailers"
                else:
                    self._remaining, self._state = length, "chunk-data"
            elif state == "chunk-data":
                take = min(self._remaining, size - pos)
                self._body(data[pos : pos + take], now)
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = "chunk-end"
            elif state == "chunk-end":
                if size - pos < 2:
                    return data[pos:]
                pos += 2
                self._state = "chunk-size"
            elif state == "trailers":
                end = data.find(b"\r\n", pos)
                if end < 0:
                    return data[pos:]
                blank = end == pos
                pos = end + 2
                if blank:
                    self._finish(now)
                    return b""
            elif state == "length":
                take = min(self._remaining, size - pos)
                self._body(data[pos : pos + take], now)
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._finish(now)
                return b""
            elif state == "until-close":
                self._body(data[pos:], now)
                return b""
            else:
                return b""
        return b""

    def _on_headers(self, head: str) -> None:
        lines = head.split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        assert self._response is not None
        self._response.status = status
        version_10 = lines[0].startswith("HTTP/1.0")
        self.keep_alive = headers.get("connection") != "close" and not (version_10 and headers.get("connection") != "keep-alive")
        if "chunked" in headers.get("transfer-encoding", ""):
            self._state = "chunk-size"
        elif "content-length" in headers:
            self._remaining = int(headers["content-length"])
            self._state = "length"
            if self._remaining == 0:
                self._finish(time.perf_counter())
        else:
            self._state, self.keep_alive = "until-close", False

    def _body(self, payload: bytes, now: float) -> None:
        response = self._response
        assert response is not None
        if response.status != 200:
            response.error_body += payload
            return
        if b"\r" in payload:
            payload = payload.replace(b"\r", b"")
        if self._sse:
            self._sse += payload
            payload = bytes(self._sse)
            self._sse.clear()
        events = payload.split(b"\n\n")
        tail = events.pop()  # after the last blank line: an event not yet complete
        for block in events:
            self._event_block(block, response, now)
        if tail:
            self._sse += tail

    @staticmethod
    def _event_block(block: bytes, response: _Response, now: float) -> None:
        if block.startswith(b"data:") and b"\n" not in block:
            response.event(block[5:].strip(), now)
            return
        for line in block.split(b"\n"):
            if line.startswith(b"data:"):
                response.event(line[5:].strip(), now)

    def _flush_sse(self, now: float, final: bool = False) -> None:
        """At the end of a response, an event left without its closing blank line still counts."""
        if final and self._sse.strip() and self._response is not None:
            self._event_block(bytes(self._sse).strip(b"\n"), self._response, now)
        self._sse.clear()

    def _finish(self, now: float) -> None:
        self._flush_sse(now, final=True)
        self._state = "idle"
        if self._done is not None and not self._done.done():
            self._done.set_result(now)
        if not self.keep_alive and self.transport is not None:
            self.transport.close()


class _Pool:
    """Connections opened before the clock starts, and reopened outside the timed span when a server closes one.

    A connection that cannot be opened stops the load (``refused``): a server that refuses connections mid-run
    has died, and every request still to send would only fail the same way, or wait for a slot for ever."""

    def __init__(self, host: str, port: int, size: int, connect_timeout_s: float) -> None:
        self.host, self.port, self.size = host, port, size
        self.connect_timeout_s = connect_timeout_s
        self.idle: asyncio.Queue[_HttpStream] = asyncio.Queue()
        self.refused = ""
        self.lost_connections = 0

    async def open(self) -> _HttpStream:
        loop = asyncio.get_running_loop()
        _, protocol = await asyncio.wait_for(loop.create_connection(_HttpStream, self.host, self.port),
                                             self.connect_timeout_s)
        sock = protocol.transport.get_extra_info("socket") if protocol.transport else None
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return protocol

    async def reopen(self) -> _HttpStream | None:
        """A new connection, or None (and the load stops) when the server does not accept one."""
        try:
            return await self.open()
        except (OSError, asyncio.TimeoutError) as error:
            self.lost_connections += 1
            if not self.refused:
                self.refused = (f"the server at {self.host}:{self.port} stopped accepting connections "
                                f"({type(error).__name__}: {error or 'no answer'})")
            return None

    async def fill(self) -> None:
        opening = asyncio.Semaphore(64)  # a burst of connects beyond the listen backlog only stalls

        async def one() -> None:
            async with opening:
                stream = await self.reopen()
                if stream is not None:
                    self.idle.put_nowait(stream)

        await asyncio.gather(*(one() for _ in range(self.size)))

    def close(self) -> None:
        while not self.idle.empty():
            stream = self.idle.get_nowait()
            if stream.transport is not None:
                stream.transport.close()


async def _one(pool: _Pool, stream: _HttpStream, request: bytes, chat: bool, timeout_s: float,
               secrets: tuple[str, ...]) -> RequestResult | None:
    """One request on ``stream``, reopened first if the server closed it; None when it could not be reopened
    (never sent). The slot goes back to the pool on every path: one lost slot stalls max_concurrency for ever."""
    try:
        connect_s = 0.0
        if stream.closed:
            started = time.perf_counter()
            fresh = await pool.reopen()
            if fresh is None:
                return None
            stream = fresh
            connect_s = time.perf_counter() - started
        response = _Response(chat)
        sent = time.perf_counter()
        try:
            finished = await asyncio.wait_for(stream.send(request, response), timeout_s)
        except asyncio.TimeoutError:
            stream.closed = True
            if stream.transport is not None:
                stream.transport.close()
            return RequestResult(sent, tuple(response.chunk_times), time.perf_counter(),
                                 error=f"timed out after {timeout_s:g} s", connect_s=connect_s)
        except (ConnectionError, OSError) as error:
            pool.lost_connections += 1
            return RequestResult(sent, tuple(response.chunk_times), time.perf_counter(), error=str(error),
                                 connect_s=connect_s)
        except Exception as error:  # a response the parser cannot follow fails its request, not the run
            return RequestResult(sent, tuple(response.chunk_times), time.perf_counter(),
                                 error=f"{type(error).__name__}: {error}", connect_s=connect_s)
    finally:
        pool.idle.put_nowait(stream)
    problem = response.error
    if response.status != 200:
        problem = f"HTTP {response.status}: {bytes(response.error_body[:300]).decode(errors='replace')}"
    elif not response.chunk_times and problem is None:
        problem = "the response carried no content"
    if problem is not None:  # an error body may quote the credential the server refused
        problem = redact(problem, secrets)
    return RequestResult(sent, tuple(response.chunk_times), finished, response.prompt_tokens, response.output_tokens,
                         problem, connect_s, response.usage)


async def _ticker(lags: list[float], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    next_tick = loop.time() + LAG_TICK_S
    while not stop.is_set():
        await asyncio.sleep(max(0.0, next_tick - loop.time()))
        now = loop.time()
        lags.append(max(0.0, now - next_tick))
        next_tick = max(next_tick + LAG_TICK_S, now)


async def run_load_async(host: str, port: int, prompts: Sequence[Any], spec: LoadSpec,
                         start_at: float | None = None, offsets: Sequence[float] | None = None) -> LoadOutcome:
    chat = spec.api == "chat"
    bodies = [request_body(spec, prompts[i % len(prompts)]) for i in range(spec.num_requests + spec.warmup_requests)]
    head = (f"POST /v1/{'chat/completions' if chat else 'completions'} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Content-Type: application/json\r\nAccept: text/event-stream\r\nConnection: keep-alive\r\n")
    requests = [head.encode() + f"Content-Length: {len(b)}\r\n\r\n".encode() + b for b in bodies]
    secrets = secret_values()
    size = min(spec.max_concurrency or spec.num_requests, spec.num_requests)
    pool = _Pool(host, port, max(1, size), spec.timeout_s)
    await pool.fill()
    sent_times: list[float] = []
    lags: list[float] = []
    results: list[RequestResult | None] = []
    timed = requests[spec.warmup_requests :]
    try:
        warm = requests[: spec.warmup_requests]
        for i in range(0, len(warm), size):
            if pool.refused:
                break
            streams = [await pool.idle.get() for _ in warm[i : i + size]]
            await asyncio.gather(*(_one(pool, s, r, chat, spec.timeout_s, secrets) for s, r in zip(streams, warm[i : i + size])))
        offsets = list(offsets) if offsets is not None else arrival_offsets(spec)
        stop = asyncio.Event()
        ticker = asyncio.create_task(_ticker(lags, stop))
        start = start_at if start_at is not None else time.perf_counter()
        tasks = []
        for request, offset in zip(timed, offsets):
            if pool.refused:
                break
            delay = start + offset - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            stream = await pool.idle.get()  # waiting here is what max_concurrency means
            if pool.refused:  # found while this request waited for its slot
                pool.idle.put_nowait(stream)
                break
            sent_times.append(time.perf_counter())
            tasks.append(asyncio.create_task(_one(pool, stream, request, chat, spec.timeout_s, secrets)))
        results = list(await asyncio.gather(*tasks))
        stop.set()
        await ticker
    finally:
        pool.close()
    done = tuple(r for r in results if r is not None)
    span = (sent_times[-1] - sent_times[0]) if len(sent_times) > 1 else 0.0
    return LoadOutcome(done, tuple(lags), spec.request_rate, span, pool.refused, len(timed) - len(done),
                       pool.lost_connections)


def _run_share(host: str, port: int, prompts: Sequence[Any], spec: LoadSpec, start_at: float,
               offsets: Sequence[float]) -> LoadOutcome:
    return asyncio.run(run_load_async(host, port, prompts, spec, start_at, offsets))


def run_load(host: str, port: int, prompts: Sequence[Any], spec: LoadSpec) -> LoadOutcome:
    """Send the load; with ``processes`` > 1, request i goes to process i mod N, on one shared schedule
    (perf_counter is CLOCK_MONOTONIC: one clock for every process on the host)."""
    if spec.processes == 1:
        return asyncio.run(run_load_async(host, port, prompts, spec))
    offsets = arrival_offsets(spec)
    shares = []
    for p in range(spec.processes):
        mine = offsets[p :: spec.processes]
        if mine:
            share_spec = replace(spec, num_requests=len(mine), processes=1,
                                 warmup_requests=-(-spec.warmup_requests // spec.processes),
                                 max_concurrency=-(-spec.max_concurrency // spec.processes) if spec.max_concurrency else None)
            shares.append((share_spec, mine, prompts[p :: spec.processes] or prompts))
    start_at = time.perf_counter() + 2.0 + 0.2 * len(shares)  # time for every process to start and connect
    # a Pool, not a ProcessPoolExecutor: leaving its block terminates the client processes, so an interrupt
    # (Ctrl-C, SIGTERM) ends the run now instead of after every client has sent its whole share
    with get_context("spawn").Pool(len(shares)) as pool:
        pending = [pool.apply_async(_run_share, (host, port, list(p), s, start_at, o)) for s, o, p in shares]
        outcomes = [result.get() for result in pending]
    results = tuple(r for o in outcomes for r in o.results)
    sends = sorted(r.sent_at for r in results)
    return LoadOutcome(results, tuple(lag for o in outcomes for lag in o.loop_lag_s), spec.request_rate,
                       sends[-1] - sends[0] if len(sends) > 1 else 0.0,
                       next((o.stopped for o in outcomes if o.stopped), ""), sum(o.unsent for o in outcomes),
                       sum(o.lost_connections for o in outcomes))
