"""The saved run ``--benchmark-compare`` chose, read and checked for the gate.

pytest-benchmark skips a file it cannot read with a warning and compares against whatever else it found,
or nothing: a corrupt newest baseline would quietly switch the gate off. Here a baseline that is there but
unreadable, or of the wrong shape, is a one-line error naming the file and what is wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class BaselineError(ValueError):
    """A saved run that cannot serve as a baseline; the message names the file and what is wrong."""


@dataclass(frozen=True)
class SavedRun:
    label: str
    benchmarks: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Baseline:
    """The run ``--benchmark-compare`` chose, and the runs saved before it on the same machine (newest
    first): the gate judges a cell against all of them, so drift between runs is not taken for a change."""

    label: str
    machine_info: dict[str, Any]
    benchmarks: dict[str, dict[str, Any]]
    earlier: tuple[SavedRun, ...] = ()


def shape_error(document: object) -> str | None:
    """What makes ``document`` unusable as a pytest-benchmark run, or None when it is one."""
    if not isinstance(document, dict):
        return f"the top level is a {type(document).__name__}, not an object"
    benchmarks = document.get("benchmarks")
    if not isinstance(benchmarks, list):
        return "it has no 'benchmarks' list"
    for index, bench in enumerate(benchmarks):
        if not isinstance(bench, dict) or not isinstance(bench.get("fullname"), str):
            return f"benchmarks[{index}] has no 'fullname'"
        stats = bench.get("stats")
        if not isinstance(stats, dict):
            return f"benchmarks[{index}] ({bench['fullname']}) has no 'stats' object"
        data = stats.get("data", [])
        if not isinstance(data, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in data):
            return f"benchmarks[{index}] ({bench['fullname']}) has stats.data that are not numbers"
    if not isinstance(document.get("machine_info", {}), dict):
        return "its 'machine_info' is not an object"
    return None


def read_run(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise BaselineError(f"baseline {path}: cannot read it ({error})") from None
    except ValueError as error:
        raise BaselineError(f"baseline {path}: not JSON ({error}); delete it or choose another with --benchmark-compare=NUM") from None
    problem = shape_error(document)
    if problem is not None:
        raise BaselineError(f"baseline {path}: not a pytest-benchmark run: {problem}; delete it or choose another with --benchmark-compare=NUM")
    return document


def _saved_runs(benchmark_session: Any, *globs: str) -> list[Path]:
    """The saved run files pytest-benchmark's storage finds (all of them, or those ``globs`` match), oldest first."""
    query = getattr(getattr(benchmark_session, "storage", None), "query", None)
    if query is None:  # a storage that is not files (elasticsearch): nothing to check here
        return []
    try:
        return sorted(Path(p) for p in query(*globs))
    except Exception:  # noqa: BLE001 - pytest-benchmark already reported what it could not query
        return []


def _same_machine(a: dict[str, Any], b: dict[str, Any]) -> bool:
    def key(info: dict[str, Any]) -> tuple[object, object]:
        return ((info.get("gpu") or {}).get("name"), (info.get("cpu") or {}).get("brand_raw"))

    return key(a) == key(b)


def load_baseline(benchmark_session: Any, runs: int = 1) -> Baseline | None:
    """The newest run pytest-benchmark chose for ``--benchmark-compare``, with up to ``runs - 1`` runs saved
    before it on the same machine; None when storage holds none.

    Raises BaselineError when the run it should have chosen is unreadable or of the wrong shape; an earlier
    run that is unreadable is left out."""
    compare = getattr(benchmark_session, "compare", None)
    files = _saved_runs(benchmark_session) if compare is True else _saved_runs(benchmark_session, str(compare))
    if compare is True and files:
        files = files[-1:]  # pytest-benchmark compares against the newest run only
    for file in files:
        read_run(file)  # raises with the file's name on the first that is not a run
    mapping = getattr(benchmark_session, "compared_mapping", None) or {}
    if not mapping:
        return None
    path, benchmarks = list(mapping.items())[-1]
    storage_path = getattr(getattr(benchmark_session, "storage", None), "path", None)
    file = Path(path) if Path(path).is_absolute() or storage_path is None else Path(storage_path) / path
    # a storage that is not files (elasticsearch): the hardware check has nothing to go on
    machine_info = read_run(file).get("machine_info", {}) if file.is_file() else {}
    earlier: list[SavedRun] = []
    if runs > 1 and getattr(benchmark_session, "compare", None) is True and file.is_file():
        for older in reversed([f for f in _saved_runs(benchmark_session) if f.name < file.name]):
            if len(earlier) == runs - 1:
                break
            try:
                document = read_run(older)
            except BaselineError:
                continue
            if _same_machine(document.get("machine_info", {}), machine_info):
                earlier.append(SavedRun(older.name, {b["fullname"]: b for b in document["benchmarks"]}))
    return Baseline(Path(path).name, machine_info, dict(benchmarks), tuple(earlier))

