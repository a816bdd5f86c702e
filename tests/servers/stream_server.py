"""A streaming OpenAI-style server with a known schedule: the first token TTFT after the request arrives,
then one token every ITL. Each token is one SSE event; a final usage event and ``data: [DONE]`` are
optional, as real servers differ (transformers serve sends usage but no [DONE]).

    python stream_server.py --port N [--ttft-ms 50] [--itl-ms 10] [--no-done] [--no-usage] [--close] [--workers K]
        [--crash-after-requests N] [--pidfile F]

``--crash-after-requests N`` dies as a segfaulting engine does (a fatal line on stderr, exit code 139) once it
has sent N whole responses, cutting the streams still in flight.

The server checks itself: every usage event carries ``server_late_ms``, the most any token of that
response left after its scheduled time, and ``token_sent_at``, when each token was written (perf_counter:
one clock for every process on the host), so a client's TTFT and ITL can be held against what was sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path


def event(payload: dict) -> bytes:
    data = b"data: " + json.dumps(payload).encode() + b"\n\n"
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


_RENDERED: dict[tuple[int, bool], bytes] = {}


class Responses:
    """Counts whole responses sent, and crashes the server after the number it was told."""

    def __init__(self, crash_after: int | None) -> None:
        self.crash_after = crash_after
        self.sent = 0

    def one_sent(self) -> None:
        self.sent += 1
        if self.crash_after is not None and self.sent >= self.crash_after:
            sys.stderr.write(f"served {self.sent} responses\nFatal Python error: Segmentation fault (simulated)\n")
            sys.stderr.flush()
            os._exit(139)


def zero_delay_response(tokens: int, chat: bool, args: argparse.Namespace) -> bytes:
    key = (tokens, chat)
    if key not in _RENDERED:
        choice = {"index": 0, "delta": {"content": "tok"}} if chat else {"index": 0, "text": "tok"}
        parts = [event({"choices": [choice]}) for _ in range(tokens)]
        if args.usage:
            parts.append(event({"choices": [], "usage": {"prompt_tokens": 8, "completion_tokens": tokens}}))
        if args.done:
            data = b"data: [DONE]\n\n"
            parts.append(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        _RENDERED[key] = b"".join(parts) + b"0\r\n\r\n"
    return _RENDERED[key]


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, args: argparse.Namespace,
                 responses: Responses) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            arrived = time.perf_counter()
            if head.startswith(b"GET "):  # /health and friends
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}")
                await writer.drain()
                continue
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = json.loads(await reader.readexactly(length)) if length else {}
            chat = b"/chat/" in head.split(b"\r\n")[0]
            tokens = int(body.get("max_tokens", 16))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
                         + (b"Connection: close\r\n" if args.close else b"") + b"\r\n")
            if args.ttft_ms == 0 and args.itl_ms == 0:  # zero delay: one write, so the server never limits a client
                writer.write(zero_delay_response(tokens, chat, args))
                await writer.drain()
                responses.one_sent()
                if args.close:
                    break
                continue
            late = 0.0
            sent_at = []
            for k in range(tokens):
                due = arrived + (args.ttft_ms + k * args.itl_ms) / 1e3
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                late = max(late, time.perf_counter() - due)
                choice = {"index": 0, "delta": {"content": "tok"}} if chat else {"index": 0, "text": "tok"}
                writer.write(event({"choices": [choice]}))
                sent_at.append(time.perf_counter())
            if args.usage:
                writer.write(event({"choices": [], "usage": {"prompt_tokens": 8, "completion_tokens": tokens,
                                                             "server_late_ms": late * 1e3, "token_sent_at": sent_at}}))
            if args.done:
                data = b"data: [DONE]\n\n"
                writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            responses.one_sent()
            if args.close:
                break
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(args: argparse.Namespace, announce: bool) -> None:
    responses = Responses(args.crash_after_requests)
    server = await asyncio.start_server(lambda r, w: handle(r, w, args, responses), "127.0.0.1", args.port,
                                        backlog=4096, reuse_port=True)
    if announce:
        print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ttft-ms", type=float, default=50.0)
    parser.add_argument("--itl-ms", type=float, default=10.0)
    parser.add_argument("--no-done", dest="done", action="store_false")
    parser.add_argument("--no-usage", dest="usage", action="store_false")
    parser.add_argument("--close", action="store_true")
    parser.add_argument("--workers", type=int, default=1, help="server processes sharing the port (SO_REUSEPORT)")
    parser.add_argument("--crash-after-requests", type=int, default=None)
    parser.add_argument("--pidfile", default=None)
    arguments = parser.parse_args()
    if arguments.pidfile:
        Path(arguments.pidfile).write_text(str(os.getpid()))
    for _ in range(arguments.workers - 1):
        if os.fork() == 0:
            asyncio.run(main(arguments, announce=False))
    asyncio.run(main(arguments, announce=True))
