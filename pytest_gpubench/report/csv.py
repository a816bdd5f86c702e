"""results.csv: one row a cell, with every gpubench figure it has. A figure's column is headed by its registry
key and unit, ``ttft_p99_ms [ms]``, ``tflops [TFLOP/s]`` (the key alone where it has no unit: ``samples``),
so the file reads the same in a spreadsheet and in pandas, and its values are in the unit the header names."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..metrics import unit_of
from .cells import RunView

ID_COLUMNS = ("cell", "test", "target", "group", "commit", "variant", "flags")


def column_name(key: str) -> str:
    unit = unit_of(key)
    return f"{key} [{unit}]" if unit else key


def csv_value(key: str, value: float) -> str:
    """Counts whole; other figures with every digit the float has (repr), in the unit the header names."""
    if not unit_of(key) and float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def results_csv(view: RunView) -> str:
    keys = view.metric_keys()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*ID_COLUMNS, *(column_name(key) for key in keys)])
    for cell in view.cells:
        ids = [cell.nodeid, cell.test, cell.target, cell.group, cell.commit or "", cell.variant or "",
               "; ".join(cell.flags)]
        # repr keeps every digit a float has; an absent figure is an empty field
        writer.writerow([*ids, *(csv_value(key, cell.values[key]) if key in cell.values else "" for key in keys)])
    return out.getvalue()


def write_results_csv(view: RunView, path: Path) -> Path:
    path.write_text(results_csv(view), encoding="utf-8")
    return path
