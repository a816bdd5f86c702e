"""The ``llm_server`` fixture: start a server for this cell, prove it ready, and tear it down; a failure
fails the cell with its class first and the server's full stdout and stderr attached to the report."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NoReturn

import pytest

from ..hardware import Target
from ..heartbeat import PREFIX, output_for, ticking
from ..reports import log_dir_for
from .engines import engine_launch
from .failures import ServerFailure
from .loadgen import LoadOutcome, LoadSpec, run_load
from .metrics import ServingMetrics, Slo, compute_metrics
from .ports import free_port
from .registry import registry_for
from .secrets import redact, secret_values
from .selfcheck import SelfCheck, self_check
from .server import RunningServer, ServerSpec, launch

SERVERS_KEY = pytest.StashKey[list[RunningServer]]()
FAILURES_KEY = pytest.StashKey[list[ServerFailure]]()
LOAD_KEY = pytest.StashKey[dict[str, Any]]()  # what a failed load measured before it stopped


def fail_cell(message: str, servers: Sequence[RunningServer] = ()) -> NoReturn:
    """Fail the cell with ``message``, every secret masked (an error body may quote one). Raised ``from None``:
    inside an ``except``, pytest.fail prints the failure twice ("During handling of the above exception...")."""
    secrets = {*secret_values(), *(value for server in servers for value in server.secrets)}
    raise pytest.fail.Exception(redact(message, tuple(sorted(secrets, key=len, reverse=True))), pytrace=False) from None


class LlmServerFactory:
    """``llm_server(engine, model=..., args=[...])`` starts one server and returns it once ready."""

    def __init__(self, request: pytest.FixtureRequest, target: Target | None) -> None:
        self._request = request
        self._target = target
        self.servers: list[RunningServer] = []
        request.node.stash[SERVERS_KEY] = self.servers
        request.node.stash[FAILURES_KEY] = []

    def __call__(
        self,
        engine: str = "command",
        *,
        model: str | None = None,
        args: Sequence[str] = (),
        argv: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        health_path: str | None = None,
        ready_timeout_s: float = 600.0,
        grace_s: float = 10.0,
        smoke_request: bool | None = None,
        name: str | None = None,
        port: int | None = None,
        continuous_batching: bool = False,
    ) -> RunningServer:
        port = port or free_port()
        gpus = 0 if self._target is None or self._target.is_cpu else self._target.count
        try:
            launch_plan = engine_launch(engine, model=model, port=port, gpus=gpus, args=args, argv=argv,
                                        continuous_batching=continuous_batching)
        except ValueError as error:
            fail_cell(f"llm_server: {error}")
        if launch_plan.note:
            warnings.warn(launch_plan.note, stacklevel=2)
        spec = ServerSpec(
            name=name or f"{engine}{len(self.servers) or ''}",
            argv=launch_plan.argv,
            port=port,
            env=dict(env or {}),
            health_path=health_path or launch_plan.health_path,
            ready_timeout_s=ready_timeout_s,
            grace_s=grace_s,
            continuous_batching=launch_plan.continuous_batching,
        )
        log_dir = log_dir_for(self._request.config, self._request.node.nodeid)
        launched: list[RunningServer] = []

        def progress() -> str:
            return f"last log line: {(launched[0].last_line if launched else '') or '(none yet)'}"

        try:
            with ticking(self._request.config, self._request.node.nodeid, f"server {spec.name!r} starting",
                         progress) as heartbeat:
                server = launch(spec, log_dir, registry_for(self._request.config))
                launched.append(server)
                self.servers.append(server)
                server.wait_ready()
                if smoke_request if smoke_request is not None else launch_plan.openai:
                    heartbeat.set_phase(f"server {spec.name!r} answering a one-token request")
                    self._one_token(server, model or "")
        except ServerFailure as failure:
            self._request.node.stash[FAILURES_KEY].append(failure)
            fail_cell(str(failure), self.servers)
        return server

    def _one_token(self, server: RunningServer, model: str) -> None:
        """A real request before anything is measured: /health can be 200 before the model can answer."""
        started = time.monotonic()
        body = json.dumps({"model": model, "prompt": "Hello", "max_tokens": 1, "stream": False}).encode()
        request = urllib.request.Request(server.base_url + "/v1/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                answer = json.loads(response.read())
            if not answer.get("choices"):
                raise ValueError(f"no choices in {str(answer)[:200]}")
        except (OSError, ValueError) as error:
            detail = (f"HTTP {error.code}: {error.read().decode(errors='replace')[:300]}"
                      if isinstance(error, urllib.error.HTTPError) else str(error))
            server.stop()
            raise server.failure("unhealthy", f"server {server.spec.name!r} answered /health but not a one-token "
                                  f"completion: {detail}", None) from None
        server.times["one_token_request"] = time.monotonic() - started

    def teardown(self) -> None:
        """Stop every server. A server that died while the cell ran, or left processes behind, fails it."""
        problems: list[str] = []
        for server in self.servers:
            try:
                server.check_alive()  # before stop(), which would make a crash look like our own SIGTERM
            except ServerFailure as failure:
                self._request.node.stash[FAILURES_KEY].append(failure)
                problems.append(str(failure))
            leftover = server.stop()
            if leftover:
                problems.append(f"server {server.spec.name!r} left processes {leftover} after SIGKILL")
        if problems:
            fail_cell("\n".join(problems), self.servers)


@pytest.fixture
def llm_server(request: pytest.FixtureRequest) -> Iterator[LlmServerFactory]:
    """Start servers for this cell: ``server = llm_server("vllm", model="...")``; torn down after the test."""
    target = request.getfixturevalue("gpubench_target") if "gpubench_target" in request.fixturenames else None
    factory = LlmServerFactory(request, target)
    yield factory
    factory.teardown()


def server_report_sections(item: pytest.Item) -> list[tuple[str, str]]:
    """Every server's full stdout and stderr, and the metrics of a load that failed, for the report of a
    failed phase of ``item``."""
    sections: list[tuple[str, str]] = []
    for server in item.stash.get(SERVERS_KEY, []):
        for path, text in server.logs().items():
            sections.append((f"gpubench server {server.spec.name!r} log {path}", text or "(empty)\n"))
    load = item.stash.get(LOAD_KEY, None)
    if load is not None:
        sections.append(("gpubench load before the failure", json.dumps(load, indent=1, sort_keys=True) + "\n"))
    return sections


def describe_finished(outcome: LoadOutcome, metrics: ServingMetrics) -> str:
    """One line: how far the load got, and what the requests that finished measured."""
    asked = len(outcome.results) + outcome.unsent
    line = (f"{metrics.completed} of {asked} requests completed before the load stopped "
            f"({metrics.failed} failed, {outcome.unsent} not sent)")
    measured = [f"{label} median {dist.median:.1f} ms, p99 {dist.percentiles[99]:.1f} ms"
                for label, dist in (("TTFT", metrics.ttft), ("TPOT", metrics.tpot), ("E2EL", metrics.e2el))
                if dist is not None]
    return f"{line}: {'; '.join(measured)}" if measured else line


class ClientBoundWarning(UserWarning):
    """The load generator, not the server, limited the run: its timings include client delay."""


class ClientRerunWarning(UserWarning):
    """A load was client-bound and sent again with more client processes (``client_bound="rerun"``); the cell
    holds the last run's figures."""


CLIENT_BOUND_ACTIONS = ("warn", "rerun")


def default_max_processes() -> int:
    """Half the cores this process may use: the server, on the same host, needs the rest."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // 2)


@dataclass(frozen=True)
class ServingReport:
    metrics: ServingMetrics
    check: SelfCheck
    outcome: LoadOutcome


RECORDABLE = ("ttft", "tpot", "e2el")


class LlmLoad:
    """``llm_load(server, prompts, max_tokens=..., max_concurrency=..., request_rate=...)`` sends the load,
    returns its metrics, and records them in the cell (pytest-benchmark samples: one per request).

    ``client_bound="rerun"``: when the self-check finds the client was the bottleneck, the load is sent again
    with twice the client processes, up to ``max_processes`` (default: half this host's cores), and each
    rerun is announced as it starts and named in a ClientRerunWarning. The default, ``"warn"``, keeps the
    run and says how many processes to use."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request

    def __call__(self, server: RunningServer | str, prompts: Sequence[Any], *, record: str = "ttft",
                 slo: Slo | None = None, client_bound: str = "warn", max_processes: int | None = None,
                 **spec: Any) -> ServingReport:
        if record not in RECORDABLE:
            raise ValueError(f"record={record!r}; use one of {', '.join(RECORDABLE)}")
        if client_bound not in CLIENT_BOUND_ACTIONS:
            raise ValueError(f"client_bound={client_bound!r}; use one of {', '.join(CLIENT_BOUND_ACTIONS)}")
        if max_processes is not None and max_processes < 1:
            raise ValueError(f"max_processes={max_processes!r}; use a number of client processes >= 1")
        if not prompts:
            raise ValueError("llm_load needs at least one prompt")
        load_spec = LoadSpec(**spec)
        cap = max(load_spec.processes, max_processes or default_max_processes())
        first_processes, reruns = load_spec.processes, 0
        outcome, metrics = self._send(server, list(prompts), load_spec, slo)
        check = self_check(outcome, load_spec.processes)
        while check.client_bound and client_bound == "rerun" and load_spec.processes < cap:
            more = min(cap, load_spec.processes * 2)
            self._say(f"client-bound with {load_spec.processes} client process(es): {check.warning}; "
                      f"sending the load again with processes={more}")
            load_spec, reruns = replace(load_spec, processes=more), reruns + 1
            outcome, metrics = self._send(server, list(prompts), load_spec, slo)
            check = self_check(outcome, load_spec.processes)
        if check.client_bound:
            capped = "" if client_bound != "rerun" else (
                f" (still, with processes={load_spec.processes} after {reruns} rerun(s): max_processes={cap})" if reruns
                else f" (not sent again: max_processes={cap} allows no more client processes)")
            warnings.warn(ClientBoundWarning(check.warning + capped), stacklevel=2)
        elif reruns:
            warnings.warn(ClientRerunWarning(
                f"the load was client-bound with processes={first_processes} and was sent again ({reruns} rerun(s)); "
                f"with processes={load_spec.processes} the self-check is ok, and the cell holds that run"), stacklevel=2)
        if "gpubench" in self._request.fixturenames:
            done = [r for r in outcome.results if r.ok]
            samples = [r.ttft if record == "ttft" else r.e2el if record == "e2el" else r.tpot for r in done]
            batching = server.spec.continuous_batching if isinstance(server, RunningServer) else None
            self._request.getfixturevalue("gpubench").record(
                [s for s in samples if s is not None], timer=f"llm_load:{record}",
                metrics={**metrics.as_dict(), **check.as_dict(),
                         "client_processes": load_spec.processes, "client_reruns": reruns,
                         # the report plots TTFT and TPOT against it
                         **({"max_concurrency": load_spec.max_concurrency} if load_spec.max_concurrency else {}),
                         **({"continuous_batching": float(batching)} if batching is not None else {})},
            )
        return ServingReport(metrics, check, outcome)

    def _send(self, server: RunningServer | str, prompts: list[Any], load_spec: LoadSpec,
              slo: Slo | None) -> tuple[LoadOutcome, ServingMetrics]:
        """One run of the load; fails the cell when the server died or answered nothing."""
        parsed = urllib.parse.urlsplit(server.base_url if isinstance(server, RunningServer) else server)
        clients = f", {load_spec.processes} client processes" if load_spec.processes > 1 else ""
        with ticking(self._request.config, self._request.node.nodeid,
                     f"load of {load_spec.num_requests} requests (+{load_spec.warmup_requests} warm-up{clients}) running",
                     lambda: f"server's last log line: {server.last_line}" if isinstance(server, RunningServer) else ""):
            outcome = run_load(parsed.hostname or "127.0.0.1", parsed.port or 80, prompts, load_spec)
        metrics = compute_metrics(outcome.results, slo)
        if isinstance(server, RunningServer):
            # broken connections are how a crash shows first: its sockets close a moment before its exit
            # status can be read, so give it that moment rather than call a dead server alive
            self._fail_if_dead(server, outcome, metrics, wait_s=5.0 if outcome.lost_connections else 0.0)
        if outcome.stopped or metrics.completed == 0:
            reason = outcome.stopped or (f"none of {len(outcome.results)} requests completed; first errors: "
                                         f"{'; '.join(metrics.first_errors)}")
            self._fail(f"[unhealthy] {reason}", outcome, metrics)
        return outcome, metrics

    def _say(self, line: str) -> None:
        """A line on the terminal now, while the test runs (the controller's, under -n)."""
        output_for(self._request.config).write(f"{PREFIX} {self._request.node.nodeid}: {line}")

    @property
    def _servers(self) -> list[RunningServer]:
        return list(self._request.node.stash.get(SERVERS_KEY, []))

    def _fail_if_dead(self, server: RunningServer, outcome: LoadOutcome, metrics: ServingMetrics, wait_s: float) -> None:
        try:
            server.check_alive(wait_s)
        except ServerFailure as failure:
            self._request.node.stash.setdefault(FAILURES_KEY, []).append(failure)
            self._fail(str(failure), outcome, metrics)

    def _fail(self, message: str, outcome: LoadOutcome, metrics: ServingMetrics) -> NoReturn:
        """Fail the cell with what the requests that finished measured: the line says it, the report holds
        every metric. They are not recorded as the cell's result: a load cut short must not become a baseline."""
        self._request.node.stash[LOAD_KEY] = {"finished_requests": metrics.as_dict(), "unsent": outcome.unsent,
                                              "stopped": outcome.stopped}
        fail_cell(f"{message}\n{describe_finished(outcome, metrics)}", self._servers)


@pytest.fixture
def llm_load(request: pytest.FixtureRequest) -> LlmLoad:
    """Send a load to a server and record TTFT/TPOT/ITL/E2EL, throughput and goodput in this cell."""
    return LlmLoad(request)
