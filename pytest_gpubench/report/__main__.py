"""A report folder from saved runs: ``python -m pytest_gpubench.report RUN.json [RUN.json ...] --out DIR``; it prints
the gpubench table of their cells too.

Any file written by ``--benchmark-json`` or ``--benchmark-save`` will do; the cells of several files make one
report (a cell in two files is taken from the later). ``--baseline OLD.json`` adds the run-vs-baseline chart."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..record import CellResult
from .folder import machines_of, write_report_folder
from .report_md import RunInfo
from .saved import SavedRun, SavedRunError, read_saved_run, records_of
from .terminal import summary_lines


def saved_info(runs: Sequence[SavedRun]) -> RunInfo:
    names = ", ".join(run.path.name for run in runs)
    dates = sorted({run.datetime[:16].replace("T", " ") for run in runs if run.datetime})
    when = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}" if dates else ""
    machines: list[str] = []
    for run in runs:
        for machine in machines_of(run.records, run.machine_info):
            if machine not in machines:
                machines.append(machine)
    commits = sorted({str(run.commit_info.get("id", ""))[:12] for run in runs if run.commit_info.get("id")})
    return RunInfo(f"the saved run{'s' if len(runs) != 1 else ''} {names}", when + (" UTC" if when else ""),
                   tuple(machines), ", ".join(commits))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_gpubench.report",
                                     description="Write a gpubench report folder from saved pytest-benchmark runs.")
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN.json",
                        help="files written by --benchmark-json or --benchmark-save")
    parser.add_argument("--out", type=Path, default=Path("gpubench-report"), metavar="DIR",
                        help="the folder to write (default: gpubench-report)")
    parser.add_argument("--baseline", type=Path, default=None, metavar="OLD.json",
                        help="a saved run to compare against: adds the run-vs-baseline chart")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the table with every column, at full width")
    args = parser.parse_args(argv)
    try:
        runs = [read_saved_run(path) for path in args.runs]
        baseline = read_saved_run(args.baseline) if args.baseline else None
    except SavedRunError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    records = records_of(runs)
    if not records:
        print(f"error: no gpubench cell with samples in {', '.join(str(p) for p in args.runs)}", file=sys.stderr)
        return 2
    for run in runs:
        for nodeid in run.skipped:
            print(f"{run.path}: {nodeid} was saved without its samples; left out", file=sys.stderr)
    try:
        folder = write_report_folder(records, args.out, saved_info(runs), baseline.records if baseline else None,
                                     baseline.path.name if baseline else "the baseline")
    except OSError as error:
        print(f"error: cannot write {args.out}: {error.strerror or error}", file=sys.stderr)
        return 2
    for line in summary_lines([CellResult(r) for r in records], verbose=args.verbose):
        print(line)
    print(f"gpubench: report in {folder.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
