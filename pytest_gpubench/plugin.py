"""pytest hooks of pytest-gpubench; each delegates to the stage that owns the work."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pytest

from . import options
from .fixture import gpubench, gpubench_target, variant  # noqa: F401 - fixtures are found on the plugin module
from .serving.fixture import llm_load, llm_server, server_report_sections  # noqa: F401
from .executors.local import auto_workers
from .hardware import discover_local_inventory, resolve_targets
from .heartbeat import register_heartbeats
from .matrix import TARGET_PARAM, parametrize_cell
from .record import attach_replay_timer, tidy_saved_json
from .report.markdown import write_gate_summary
from .report.terminal import gate_lines, summary_lines
from .session import SESSION_PLUGIN_NAME, CellResult, GpubenchSession, get_session
from .workers import WORKEROUTPUT_KEY, merge_worker_payload, worker_payload


@pytest.hookimpl
def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser)


@pytest.hookimpl
def pytest_configure(config: pytest.Config) -> None:
    # JAX takes 75 % of a GPU at its first use unless told otherwise, which starves torch cells run in the same
    # process; an explicit setting by the user wins.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    config.addinivalue_line("markers", "variants(*names): run this benchmark once per named variant")
    config.pluginmanager.register(GpubenchSession.from_config(config), SESSION_PLUGIN_NAME)
    register_heartbeats(config)


@pytest.hookimpl(optionalhook=True, tryfirst=True)  # before xdist's own answer, the CPU count
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto`` with GPU targets: one worker per GPU slot. Runs before pytest_configure, so it reads the
    settings and the host itself."""
    settings = options.load_settings(config)
    inventory = discover_local_inventory()
    return auto_workers(resolve_targets(settings.requests, inventory, settings.catalog), len(inventory.gpus))


@pytest.hookimpl(trylast=True)  # after @pytest.mark.parametrize, so the GPU comes last in ids
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if TARGET_PARAM not in metafunc.fixturenames:
        return
    session = get_session(metafunc.config)
    parametrize_cell(metafunc, session.targets, session.skip_reasons, session.settings.variants)


@pytest.hookimpl(tryfirst=True)  # before pytest-benchmark's own hook sees the items
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if TARGET_PARAM in getattr(item, "fixturenames", ()):
            attach_replay_timer(item)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed phase of a cell that launched servers carries their full stdout and stderr."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for title, text in server_report_sections(item):
            report.sections.append((title, text))


@pytest.hookimpl
def pytest_report_header(config: pytest.Config) -> list[str]:
    session = get_session(config)
    host = session.inventory
    lines = [f"gpubench: targets {', '.join(t.id for t in session.targets)}; host has {host.describe()}"]
    if host.gpus:
        lines.append(f"gpubench: driver {host.driver or '?'}, CUDA {host.cuda or '?'} (via {host.source})")
    for target, reason in session.skip_reasons.items():
        lines.append(f"gpubench: {target.id} will be skipped: {reason}")
    return lines


@pytest.hookimpl
def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    machine_info["gpu"] = get_session(config).machine_info()


@pytest.hookimpl
def pytest_benchmark_update_json(config: pytest.Config, benchmarks: Sequence[Any], output_json: dict[str, Any]) -> None:
    tidy_saved_json(benchmarks, output_json)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    payload = getattr(node, "workeroutput", {}).get(WORKEROUTPUT_KEY)
    if payload:
        merge_worker_payload(get_session(node.config), payload)


@pytest.hookimpl
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = get_session(session.config)
    if state.in_worker:
        session.config.workeroutput[WORKEROUTPUT_KEY] = worker_payload(state)  # type: ignore[attr-defined]
        if state.records:  # measured after all: pytest-benchmark's "disabled under xdist" warning would mislead
            state.benchmark_session.xdist_benchmark_found = False
        return
    gate = state.settings.gate
    if gate is not None:
        state.note_missing_cells()
        state.summary_written_to = write_gate_summary(state, gate, session.config)


@pytest.hookimpl
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = get_session(config)
    results = [CellResult(record) for record in state.records]
    if results:
        terminalreporter.section(f"gpubench: {len(results)} cell{'s' if len(results) != 1 else ''}", sep="-")
        for line in summary_lines(results):
            terminalreporter.write_line(line)
    if state.settings.gate is not None:
        terminalreporter.section("gpubench gate", sep="-")
        for line in gate_lines(state.verdicts.values()):
            terminalreporter.write_line(line)
        if state.summary_written_to is not None:
            terminalreporter.write_line(f"markdown summary: {state.summary_written_to}")
