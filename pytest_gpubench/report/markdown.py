"""The gate's markdown summary, for CI pages ($GITHUB_STEP_SUMMARY) and as a file."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pytest

from ..gate import OUTCOMES, GatePolicy, Verdict
from ..measure.stats import format_seconds
from ..session import GpubenchSession

ORDER = ("regressed", "failed", "slower-not-significant", "faster", "unchanged", "new", "too-few-samples",
         "different-hardware", "no-baseline", "missing")
MARK = {"regressed": "❌", "failed": "❌", "slower-not-significant": "⚠️", "faster": "🚀", "unchanged": "✅",
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


def write_gate_summary(session: GpubenchSession, gate: GatePolicy, config: pytest.Config) -> str:
    """Append the summary to $GITHUB_STEP_SUMMARY when CI sets it, else write --gpubench-summary's file."""
    text = gate_markdown(session.verdicts.values(), gate.threshold, gate.alpha)
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as handle:
            handle.write(text + "\n")
        return f"$GITHUB_STEP_SUMMARY ({step_summary})"
    path = session.settings.summary_path or Path(config.rootpath) / "gpubench-summary.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="utf-8")
    return str(path)
