"""pytest hooks of pytest-gpubench; each delegates to the stage that owns the work."""

from __future__ import annotations

import os
from collections.abc import Generator, Sequence
from typing import Any

import pytest

from . import hookspecs, options
from .baseline import BaselineError
from .executors import Executor, ExecutorChoice
from .executors.local import auto_workers, cores_shared_warning
from .fixture import RECORD_KEY, gpubench, gpubench_commit, gpubench_target, gpubench_variant  # noqa: F401 - fixtures are found on the plugin module
from .hardware import Target, discover_local_inventory, resolve_targets
from .heartbeat import register_heartbeats
from .interrupts import register_interrupts
from .ingest import ingest, note_missing_cells, nothing_measured
from .matrix import (COMMIT_PARAM, TARGET_PARAM, VARIANT_PARAM, Commit, Variant, cell_params, comparison_key,
                     group_siblings, off_commit_target, parametrize_commits, parametrize_variants_and_target)
from .record import CellResult, tidy_saved_json
from .report.cost import add_costs_to_saved_json
from .report.folder import report_line, write_run_report
from .report.junit import register_junit
from .report.markdown import write_gate_summary
from .report.speedup import speedup_json
from .report.terminal import gate_lines, summary_lines
from .reports import attach
from .schedule import CellScheduler
from .serving.fixture import llm_load, llm_server, server_report_sections  # noqa: F401
from .session import SESSION_PLUGIN_NAME, GpubenchSession, get_session

SCHEDULER_KEY = pytest.StashKey[CellScheduler]()
EXECUTORS_KEY = pytest.StashKey[dict[tuple[str, str | None, str | None], Executor]]()


@pytest.hookimpl
def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


@pytest.hookimpl
def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser)


@pytest.hookimpl
def pytest_configure(config: pytest.Config) -> None:
    # JAX takes 75 % of a GPU at its first use unless told otherwise, which starves torch cells run in the same
    # process; an explicit setting by the user wins.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    config.addinivalue_line("markers", "variants(*names): run this benchmark once per named variant")
    session = GpubenchSession.from_config(config)
    config.pluginmanager.register(session, SESSION_PLUGIN_NAME)
    config.pluginmanager.register(SessionHooks(session), "gpubench-session-hooks")
    config.stash[EXECUTORS_KEY] = {}
    config.stash[SCHEDULER_KEY] = CellScheduler(lambda item: executor_for(item), session.settings.rounds,
                                                session.settings.interleave)
    register_heartbeats(config)
    register_interrupts(config)
    register_junit(config)


@pytest.hookimpl(optionalhook=True, tryfirst=True)  # before xdist's own answer, the CPU count
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto`` with GPU targets: one worker per GPU slot. Runs before pytest_configure, so it reads the
    settings and the host itself."""
    settings = options.load_settings(config)
    inventory = discover_local_inventory()
    return auto_workers(resolve_targets(settings.requests, inventory, settings.catalog), len(inventory.gpus))


class SessionHooks:
    """The hooks that need the run's state but are not given the config, and a second implementation of
    one hook this module already implements."""

    def __init__(self, session: GpubenchSession) -> None:
        self.session = session

    @pytest.hookimpl(tryfirst=True)
    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Runs that declare commits: the commit and variant lead the id, so they are parametrized before
        pytest applies the test's own parametrize markers."""
        if TARGET_PARAM in metafunc.fixturenames and self.session.matrix.commits:
            parametrize_commits(metafunc, self.session.matrix)

    @pytest.hookimpl(tryfirst=True)  # before the terminal, JUnit XML and pytest's failure count read it
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.session.is_consumer:
            ingest(self.session, report)

    @pytest.hookimpl(trylast=True)  # the run's last word: after pytest-benchmark's table and every other summary
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        line = report_line(self.session.config) if self.session.config is not None else None
        if line is not None:
            text, warning = line
            terminalreporter.write_line(text, yellow=warning, bold=warning)


@pytest.hookimpl(trylast=True)  # after @pytest.mark.parametrize, so the GPU comes last in ids
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if TARGET_PARAM not in metafunc.fixturenames:
        return
    session = get_session(metafunc.config)
    parametrize_variants_and_target(metafunc, session.targets, {}, session.matrix)


def choice_of(item: pytest.Item) -> ExecutorChoice:
    params = cell_params(item)
    commit, variant = params.get(COMMIT_PARAM), params.get(VARIANT_PARAM)
    return ExecutorChoice(params[TARGET_PARAM], commit if isinstance(commit, Commit) else None,
                          variant if isinstance(variant, Variant) else None)


def executor_for(item: pytest.Item) -> Executor:
    """The executor of a cell, asked once per distinct target, commit and variant."""
    choice = choice_of(item)
    cache = item.config.stash[EXECUTORS_KEY]
    key = (choice.target.id, choice.commit.name if choice.commit else None, choice.variant.name if choice.variant else None)
    if key not in cache:
        cache[key] = item.config.hook.pytest_gpubench_make_executor(config=item.config, choice=choice)
    return cache[key]


@pytest.hookimpl(trylast=True)
def pytest_gpubench_make_executor(config: pytest.Config, choice: ExecutorChoice) -> Executor:
    return get_session(config).default_executor(choice)


def _is_cell(item: pytest.Item) -> bool:
    return TARGET_PARAM in getattr(item, "fixturenames", ()) and TARGET_PARAM in cell_params(item)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> Generator[None, None, None]:
    """Cells become benchmarks: off-target commit cells are deselected, a comparison's variants run back to
    back, each cell is marked as one (user property, for reports wherever they come from) and skipped with
    its executor's reason when no chosen executor can run it."""
    cells = [item for item in items if _is_cell(item)]
    unwanted = [item for item in cells if off_commit_target(item)]
    if unwanted:
        config.hook.pytest_deselected(items=unwanted)
        items[:] = [item for item in items if item not in set(unwanted)]
        cells = [item for item in cells if item not in set(unwanted)]
    items[:] = group_siblings(items)
    benchmark_session = config.pluginmanager.get_plugin("pytest-benchmark")
    for item in cells:
        target: Target = cell_params(item)[TARGET_PARAM]
        item.user_properties.append((TARGET_PARAM, target.id))
        reason = executor_for(item).unmet_reason(target)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=reason))
        if benchmark_session is not None and benchmark_session.skip:
            item.add_marker(pytest.mark.skip(reason="Skipping benchmark (--benchmark-skip active)."))
        key = comparison_key(item)
        if key is not None:  # under -n --dist loadgroup a comparison's variants share a worker
            item.add_marker(pytest.mark.xdist_group("gpubench:" + "::".join(key)))
    # pytest-benchmark's --benchmark-only keeps the tests that use its fixture: cells count as such
    only = benchmark_session is not None and benchmark_session.only
    if only:
        for item in cells:
            item.fixturenames.append("benchmark")  # type: ignore[attr-defined]
    try:
        return (yield)
    finally:
        if only:
            for item in cells:
                item.fixturenames.remove("benchmark")  # type: ignore[attr-defined]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    """A cell runs through its executor (here, in a subprocess, elsewhere) and the scheduler logs its reports."""
    if not _is_cell(item):
        return None
    return item.config.stash[SCHEDULER_KEY].run_protocol(item, nextitem)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """The call report carries the cell's record to whichever process stores it; a failed phase of a cell
    that launched servers carries their full stdout and stderr."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        record = item.stash.get(RECORD_KEY, None)
        if record is not None:
            del item.stash[RECORD_KEY]  # the next round of this item measures anew
            attach(report, record)
    if report.failed:
        for title, text in server_report_sections(item):
            report.sections.append((title, text))


@pytest.hookimpl
def pytest_sessionstart(session: pytest.Session) -> None:
    state = get_session(session.config)
    if state.is_consumer and state.settings.gate is not None:
        try:
            state.baseline  # noqa: B018 - read now: a baseline the gate cannot use ends the run before it starts
        except BaselineError as error:
            raise pytest.UsageError(str(error)) from None


@pytest.hookimpl
def pytest_report_header(config: pytest.Config) -> list[str]:
    session = get_session(config)
    host = session.inventory
    lines = [f"gpubench: targets {', '.join(t.id for t in session.targets)}; host has {host.describe()}"]
    if host.gpus:
        lines.append(f"gpubench: driver {host.driver or '?'}, CUDA {host.cuda or '?'} (via {host.source})")
    for target, reason in session.skip_reasons.items():
        lines.append(f"gpubench: {target.id} will be skipped: {reason}")
    matrix = session.matrix
    if matrix.commits or matrix.has_environments:
        commits = f"{len(matrix.commits)} commit(s), " if matrix.commits else ""
        lines.append(f"gpubench: {commits}variant environments in {session.envs.root}")
    workers = getattr(config.option, "numprocesses", None)
    if isinstance(workers, int) and workers > 1 and any(t.is_cpu for t in session.targets):
        warning = cores_shared_warning(workers, len(os.sched_getaffinity(0)))
        if warning is not None:
            lines.append(warning)
    if session.settings.rounds > 1:
        lines.append(f"gpubench: {session.settings.rounds} rounds a cell"
                     + (", interleaved across variants" if session.settings.interleave else ", back to back"))
    return lines


@pytest.hookimpl
def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    machine_info["gpu"] = get_session(config).machine_info()


@pytest.hookimpl
def pytest_benchmark_update_json(config: pytest.Config, benchmarks: Sequence[Any], output_json: dict[str, Any]) -> None:
    tidy_saved_json(benchmarks, output_json)
    records = get_session(config).records
    speedups = speedup_json(records)
    if speedups["comparisons"]:
        output_json["gpubench"] = {"speedups": speedups}
    add_costs_to_saved_json(records, output_json)


@pytest.hookimpl
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = get_session(session.config)
    state.close_executors()
    if not state.is_consumer:
        return
    gate = state.settings.gate
    if gate is not None and nothing_measured(state) and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED  # a gate that judged nothing has not passed
    if gate is not None:
        note_missing_cells(state)
        state.summary_written_to = write_gate_summary(state, gate, session.config)
    write_run_report(state, session.config)


@pytest.hookimpl(tryfirst=True)  # the gpubench table comes before pytest-benchmark's, whatever order they loaded in
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = get_session(config)
    results = [CellResult(record) for record in state.records]
    if results:
        terminalreporter.section(f"gpubench: {len(results)} cell{'s' if len(results) != 1 else ''}", sep="-")
        for line in summary_lines(results, verbose=config.option.verbose > 0):
            terminalreporter.write_line(line)
    if (empty := nothing_measured(state)) is not None:
        terminalreporter.write_line(empty + ("; the gate fails the run" if state.settings.gate else ""),
                                    yellow=True, bold=True)
    if state.settings.gate is not None:
        terminalreporter.section("gpubench gate", sep="-")
        for line in gate_lines(state.verdicts.values()):
            terminalreporter.write_line(line)
        if state.summary_written_to is not None:
            terminalreporter.write_line(f"markdown summary: {state.summary_written_to}")
