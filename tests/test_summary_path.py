"""A gate summary that cannot be written costs one warning line, not the run: the verdicts still print and the
exit status is the cells'."""

from __future__ import annotations

from pathlib import Path

import pytest

FAST = ["--gpubench-max-time=0.3", "--gpubench-min-time=0.05", "--gpubench-warmup=0.01", "--gpu=cpu",
        "-p", "no:cacheprovider"]
CELLS = """
def test_one(gpubench):
    gpubench(sum, range(100))


def test_two(gpubench):
    gpubench(sum, range(200))
"""


def _under_a_file(root: Path) -> Path:
    (root / "taken").write_text("a file, not a folder\n")
    return root / "taken" / "summary.md"


def _in_proc(root: Path) -> Path:
    if not Path("/proc/self").is_dir():
        pytest.skip("needs /proc")
    return Path("/proc/gpubench-summary.md")


@pytest.mark.parametrize("where", [_under_a_file, _in_proc], ids=["under-a-file", "in-proc"])
def test_unwritable_summary_is_one_warning_line(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                                where: object) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    assert callable(where)
    summary = where(pytester.path)
    pytester.makepyfile(test_cells=CELLS)
    result = pytester.runpytest_subprocess(*FAST, "--benchmark-compare", "--gpubench-gate=5%",
                                           f"--gpubench-summary={summary}")
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.OK, output
    result.assert_outcomes(passed=2)
    assert "Traceback" not in output and "INTERNALERROR" not in output, output
    warnings = [line for line in output.splitlines() if "gate summary" in line]
    assert len(warnings) == 1, output
    assert warnings[0].startswith(f"gpubench: WARNING: the gate summary was not written to {summary}: "), warnings[0]
    # the verdicts still print, one line a cell
    result.stdout.fnmatch_lines(["*- gpubench gate -*", "2 no-baseline", "test_cells.py::test_one?cpu?: no-baseline*",
                                 "test_cells.py::test_two?cpu?: no-baseline*"])


def test_unwritable_step_summary_is_one_warning_line(pytester: pytest.Pytester,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """CI's $GITHUB_STEP_SUMMARY pointing somewhere unwritable (here: a folder) is the same case."""
    folder = pytester.mkdir("step-summary-is-a-folder")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(folder))
    pytester.makepyfile(test_cells=CELLS)
    result = pytester.runpytest_subprocess(*FAST, "--benchmark-compare", "--gpubench-gate=5%")
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.OK, output
    warnings = [line for line in output.splitlines() if "gate summary" in line]
    assert len(warnings) == 1 and f"$GITHUB_STEP_SUMMARY ({folder})" in warnings[0], output
