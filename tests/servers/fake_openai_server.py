"""A stand-in OpenAI-compatible server whose misbehaviour the failure tests choose. Real process, real
port, real logs: only the model is missing.

    python fake_openai_server.py --port N [--stderr-lines N --exit 1] [--oom] [--hang] [--load-delay S]
        [--crash-after S] [--missing-model PATH] [--echo-env NAME] [--child] [--pidfile F] [--reject TEXT]

``--mention-in-passing`` logs, at start, lines that name HF_TOKEN and "out of memory" without anything being
wrong; ``--fail-with LINE`` dies of a traceback whose last line is LINE (exit code 1).
``--ignore-term FILE`` ignores SIGTERM, as a server busy freeing GPU memory may, and writes FILE when one comes.
``--reject TEXT`` answers every completion with HTTP 401 and TEXT as the error, as a server refusing a token does.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class Handler(BaseHTTPRequestHandler):
    reject: str | None = None

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        sys.stderr.write("INFO: " + (format % args) + "\n")

    def do_GET(self) -> None:  # noqa: N802
        self._reply(200 if self.path == "/health" else 404, {"status": "ok"})

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", 0))
        json.loads(self.rfile.read(length) or b"{}")
        if self.reject is not None:
            self._reply(401, {"error": self.reject})
            return
        self._reply(200, {"choices": [{"text": "x", "index": 0}], "usage": {"completion_tokens": 1}})

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stderr-lines", type=int, default=0)
    parser.add_argument("--exit", type=int, default=None)
    parser.add_argument("--oom", action="store_true")
    parser.add_argument("--hang", action="store_true")
    parser.add_argument("--load-delay", type=float, default=0.0)
    parser.add_argument("--crash-after", type=float, default=None)
    parser.add_argument("--missing-model", default=None)
    parser.add_argument("--echo-env", default=None)
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--pidfile", default=None)
    parser.add_argument("--reject", default=None)
    parser.add_argument("--mention-in-passing", action="store_true")
    parser.add_argument("--fail-with", default=None)
    parser.add_argument("--ignore-term", default=None)
    args = parser.parse_args()

    if args.ignore_term:
        def note_term(signum: int, frame: object) -> None:
            sys.stderr.write("SIGTERM received; still busy, ignoring it\n")
            Path(args.ignore_term).write_text("SIGTERM")
        signal.signal(signal.SIGTERM, note_term)
    pids = [os.getpid()]
    if args.child:
        pids.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]).pid)
    if args.pidfile:
        with open(args.pidfile, "w") as handle:
            handle.write(" ".join(map(str, pids)))
    print(f"fake server starting on port {args.port}", flush=True)
    if args.echo_env:
        print(f"using {args.echo_env}={os.environ.get(args.echo_env, '')}", file=sys.stderr, flush=True)
    if args.mention_in_passing:
        sys.stderr.write("INFO: HF_TOKEN is not set; only public models can be downloaded\n"
                         "WARNING: out of memory for a CUDA graph of batch 512 on the first try; retrying with 256\n")
    for number in range(1, args.stderr_lines + 1):
        sys.stderr.write(f"stderr line {number} of {args.stderr_lines}\n")
    if args.oom:
        sys.stderr.write("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB\n")
        return 1
    if args.missing_model:
        sys.stderr.write(f"OSError: {args.missing_model} is not a local folder and is not a valid model identifier\n")
        return 1
    if args.fail_with:
        sys.stderr.write(f'Traceback (most recent call last):\n  File "serve.py", line 12, in <module>\n'
                         f'    load_config(path)\n{args.fail_with}\n')
        return 1
    if args.exit is not None:
        sys.stderr.flush()
        return args.exit
    if args.hang:
        while True:
            print("loading weights...", file=sys.stderr, flush=True)
            time.sleep(1)
    time.sleep(args.load_delay)
    Handler.reject = args.reject
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)  # raises "Address already in use"
    if args.crash_after is not None:
        def crash() -> None:
            time.sleep(args.crash_after)
            sys.stderr.write("Fatal Python error: Segmentation fault (simulated)\n")
            sys.stderr.flush()
            os._exit(139)
        threading.Thread(target=crash, daemon=True).start()
    print("ready", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
