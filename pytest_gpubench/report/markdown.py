"""The gate's markdown summary, for CI pages ($GITHUB_STEP_SUMMARY) and as a file."""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pytest

from ..gate import OUTCOMES, GatePolicy, Verdict
from ..measure.stats import format_seconds
from ..session import GpubenchSession

ORDER = ("regressed", "failed", "unstable", "slower-not-significant", "faster", "unchanged", "new", "too-few-samples",
         "different-hardware", "no-baseline", "missing")
MARK = {"regressed": "❌", "failed": "❌", "unstable": "〰️", "slower-not-significant": "⚠️", "faster": "🚀", "unchanged": "✅",
        "new": "🆕", "too-few-samples": "❔", "different-hardware": "❔", "no-baseline": "❔", "missing": "➖"}


def gate_markdown(verdicts: Iterable[Verdict], threshold: float, alpha: float) -> str:
    rows = sorted(verdicts, key=lambda v: (ORDER.index(v.outcome), v.fullname))
    counts = Counter(v.outcome for v in rows)
    baseline = next((v.baseline for v in rows if v.baseline), None)
    lines = [
        "## gpubench regression gate",
        "",
        f"Threshold {threshold:.2%} on the median, AND one-sided Mann-Whitney U p < {alpha:g} on the raw samples. "
        f"Baseline: {baseline or 'none'}.",
        "",
        " · ".join(f"{MARK[o]} {counts[o]} {o}" for o in ORDER if counts[o]),
        "",
        "| cell | baseline median | median now | change | p-value | verdict |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for v in rows:
        old = format_seconds(v.old_median) if v.old_median is not None else "—"
        new = format_seconds(v.new_median) if v.new_median is not None else "—"
        change = f"{v.change:+.2%}" if v.change is not None else "—"
        p_value = f"{v.p_value:.2g}" if v.p_value is not None else "—"
        verdict = f"{MARK[v.outcome]} {v.outcome}" + (f": {v.note.strip()}" if v.note and v.outcome not in ("regressed", "slower-not-significant") else "")
        lines.append(f"| `{v.fullname}` | {old} | {new} | {change} | {p_value} | {verdict} |")
    lines += ["", "<details><summary>What each verdict means</summary>", ""]
    lines += [f"- **{o}**: {OUTCOMES[o]}" for o in ORDER if counts[o]]
    lines += ["", "</details>", ""]
    return "\n".join(lines)


def write_gate_summary(session: GpubenchSession, gate: GatePolicy, config: pytest.Config) -> str | None:
    """Append the summary to $GITHUB_STEP_SUMMARY when CI sets it, else write --gpubench-summary's file.

    Returns where it went, or None when it could not be written: then one warning line says why, and the run
    goes on (the verdicts are in the terminal and the exit status is the cells'; a summary file is a copy)."""
    text = gate_markdown(session.verdicts.values(), gate.threshold, gate.alpha)
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        where = f"$GITHUB_STEP_SUMMARY ({step_summary})"
        try:
            with open(step_summary, "a", encoding="utf-8") as handle:
                handle.write(text + "\n")
        except OSError as error:
            _warn_not_written(config, where, error)
            return None
        return where
    path = session.settings.summary_path or Path(config.rootpath) / "gpubench-summary.md"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")
    except OSError as error:
        _warn_not_written(config, str(path), error, path)
        return None
    return str(path)


def _reason(error: OSError, path: Path | None) -> str:
    # mkdir's "File exists" or "Not a directory" about some parent reads as if the summary were in the way: name
    # the file that is where a folder should be
    parents = path.parents if path is not None else ()
    blocker = next((parent for parent in parents if parent.exists() and not parent.is_dir()), None)
    if blocker is not None:
        return f"{blocker} is a file, not a folder"
    return f"{error.strerror or type(error).__name__}: {error.filename}" if error.filename else str(error)


def _warn_not_written(config: pytest.Config, where: str, error: OSError, path: Path | None = None) -> None:
    line = f"gpubench: WARNING: the gate summary was not written to {where}: {_reason(error, path)}"
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line, yellow=True, bold=True)
    else:
        print(line, file=sys.stderr)
