"""The report folder: report.md, results.csv, plots/*.png and index.html, from the cells of a run (live, at
the end of a pytest run) or of saved runs (``python -m pytest_gpubench.report``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from ..baseline import BaselineError
from ..record import CellRecord
from ..session import GpubenchSession
from .cells import RunView
from .csv import write_results_csv
from .html import index_html
from .plots import draw_plots, missing_extra, plot_makers
from .report_md import Plot, RunInfo, report_markdown
from .saved import record_from_saved

PLOTS_DIR = "plots"


@dataclass(frozen=True)
class ReportFolder:
    path: Path
    plots: tuple[Plot, ...]
    missing: str | None  # what to install for the plots, when they could not be drawn

    @property
    def index(self) -> Path:
        return self.path / "index.html"

    def describe(self) -> str:
        plots = f", {len(self.plots)} plot{'s' if len(self.plots) != 1 else ''}" if self.plots else ""
        missing = f"; {self.missing}" if self.missing else ""
        return f"{self.index} (report.md, results.csv{plots}){missing}"


def machines_of(records: Iterable[CellRecord], run_machine_info: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """'4x NVIDIA H200' for each kind of host GPU the cells ran on ('CPU' for cells of a GPU-less host)."""
    found: list[str] = []
    for record in records:
        gpu = (record.host.get("gpu") or record.details.get("host", {}).get("gpu")
               or (run_machine_info or {}).get("gpu") or {})
        name = gpu.get("name")
        text = f"{gpu.get('count') or 1}x {name}" if name else "CPU"
        if record.details.get("target") == "cpu":
            text = "CPU"
        if text not in found:
            found.append(text)
    return tuple(found)


def _clear_old_plots(folder: Path, view: RunView, baseline: RunView | None) -> None:
    """A plot this run has no data for must not survive from an earlier run into this one's folder. Only the
    files this module writes are removed: the folder may be one the user also keeps other things in."""
    for file, *_ in plot_makers(view, baseline or view, ""):
        (folder / file).unlink(missing_ok=True)


def write_report_folder(records: Sequence[CellRecord], path: Path, info: RunInfo,
                        baseline: Sequence[CellRecord] | None = None, baseline_label: str = "the baseline"
                        ) -> ReportFolder:
    """Write the folder; raises OSError when it cannot be written."""
    view = RunView.of(records)
    baseline_view = RunView.of(baseline) if baseline else None
    path.mkdir(parents=True, exist_ok=True)
    plots_dir = path / PLOTS_DIR
    missing = missing_extra()
    plots: list[Plot] = []
    if plots_dir.is_dir():
        _clear_old_plots(plots_dir, view, baseline_view)
    if missing is None:
        plots = draw_plots(view, plots_dir, baseline_view, baseline_label)
    write_results_csv(view, path / "results.csv")
    (path / "report.md").write_text(report_markdown(view, info, plots, missing), encoding="utf-8")
    (path / "index.html").write_text(index_html(view, info, plots, missing), encoding="utf-8")
    return ReportFolder(path, tuple(plots), missing)


def live_info(records: Sequence[CellRecord], commit: str = "") -> RunInfo:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return RunInfo("this run", when, machines_of(records), commit)


@dataclass(frozen=True)
class Written:
    """What became of this run's report folder: the folder, or the one line that says why there is none."""

    folder: ReportFolder | None
    problem: str | None = None


REPORT_KEY = pytest.StashKey[Written]()


def write_run_report(state: GpubenchSession, config: pytest.Config) -> None:
    """At the end of a run that measured cells, the report folder --gpubench-report names (gpubench-report by
    default). A folder that cannot be written, or a report that breaks, costs one warning line, never the run:
    pytest-benchmark saves the results after this hook, and must still."""
    path = state.settings.report_dir
    if path is None or not state.records:
        return
    baseline = None
    label = "the baseline"
    try:
        chosen = state.baseline if config.getoption("benchmark_compare", None) else None
    except BaselineError:
        chosen = None  # the gate reports an unusable baseline itself; the report leaves the chart out
    if chosen is not None:
        baseline = [r for r in (record_from_saved(b) for b in chosen.benchmarks.values()) if r is not None]
        label = chosen.label
    try:
        folder = write_report_folder(state.records, path, live_info(state.records), baseline, label)
    except OSError as error:
        config.stash[REPORT_KEY] = Written(None, f"the report folder was not written to {path}: "
                                                 f"{error.strerror or type(error).__name__}: {error.filename or path}")
    except Exception as error:  # noqa: BLE001 - a broken report must not lose the run's saved results
        config.stash[REPORT_KEY] = Written(None, f"the report folder {path} is incomplete: {type(error).__name__}: "
                                                 f"{error} (please report this)")
    else:
        config.stash[REPORT_KEY] = Written(folder)


def report_line(config: pytest.Config) -> tuple[str, bool] | None:
    """The line that ends the run's output: where the report is, or (True) a warning why it is not."""
    written = config.stash.get(REPORT_KEY, None)
    if written is None:
        return None
    if written.folder is None:
        return f"gpubench: WARNING: {written.problem}", True
    return f"gpubench: report in {written.folder.describe()}", False
