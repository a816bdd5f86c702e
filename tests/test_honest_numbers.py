"""Honest numbers in every output: flagged noisy or thin cells, strict JSON, and a run that measured
nothing saying so (and failing under the gate)."""

from __future__ import annotations

import json

import pytest

FAST = ["--gpu=cpu", "--gpubench-max-time=0.3", "--gpubench-min-time=0.05", "--gpubench-warmup=0.01",
        "-p", "no:cacheprovider"]


def test_noisy_and_thin_cells_are_flagged_in_the_table_and_the_json(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_cells="""
        def test_thin(gpubench):
            gpubench.record([0.010, 0.030, 0.001, 0.050])  # 4 samples, wildly spread: a serving cell's TTFTs

        def test_steady(gpubench):
            gpubench.record([0.001] * 20, metrics={"client_target_rate": float("inf")})
    """)
    result = pytester.runpytest(*FAST, "--benchmark-json=out.json")
    result.assert_outcomes(passed=2)
    text = result.stdout.str()
    # the row is marked, and a note under the table says why
    assert any(line.startswith("! test_thin[cpu] ") for line in result.stdout.lines)
    note = next(line for line in result.stdout.lines if line.startswith("! test_thin[cpu]: "))
    assert "noisy: stdrel" in note and "above the 0.50% target" in note and "few samples: 4 < 10" in note
    assert any(line.startswith("test_steady[cpu] ") for line in result.stdout.lines)
    assert not any(line.startswith("! test_steady[cpu]") for line in result.stdout.lines)
    assert "! 1 cell stopped noisier than the stdrel target or with fewer samples than the minimum" in text
    raw = (pytester.path / "out.json").read_text()
    assert "Infinity" not in raw and "NaN" not in raw
    document = json.loads(raw, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))
    by_name = {b["name"]: b["extra_info"]["gpubench"] for b in document["benchmarks"]}
    assert by_name["test_thin[cpu]"]["flags"][1] == "few samples: 4 < 10"
    assert by_name["test_steady[cpu]"]["flags"] == []
    assert by_name["test_steady[cpu]"]["metrics"]["client_target_rate"] is None


def test_a_run_that_measured_nothing_says_so_and_fails_under_the_gate(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_cells="def test_one(gpubench):\n    gpubench.record([0.001] * 10)\n")
    pytester.runpytest(*FAST, "--benchmark-autosave").assert_outcomes(passed=1)
    # on a host without the GPU every cell of an H200 target is skipped
    plain = pytester.runpytest("--gpu=H200", "-p", "no:cacheprovider")
    plain.assert_outcomes(skipped=1)
    assert plain.ret == pytest.ExitCode.OK
    assert "gpubench: 0 of 1 cells measured: 1 skipped (needs 1× H200; this host has no GPU)" in plain.stdout.lines
    gated = pytester.runpytest("--gpu=H200", "-p", "no:cacheprovider", "--benchmark-compare", "--gpubench-gate=5%")
    gated.assert_outcomes(skipped=1)
    assert gated.ret == pytest.ExitCode.TESTS_FAILED
    assert ("gpubench: 0 of 1 cells measured: 1 skipped (needs 1× H200; this host has no GPU); the gate fails the run"
            in gated.stdout.lines)


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["in-process", "xdist"])
def test_the_line_for_a_run_that_measured_nothing_says_why(pytester: pytest.Pytester, workers: list[str]) -> None:
    pytester.makepyfile(test_cells="""
        import pytest

        def test_serving_a(gpubench):
            pytest.skip("needs the serving extra")

        def test_serving_b(gpubench):
            pytest.skip("needs the serving extra")

        def test_vllm(gpubench):
            pytest.skip("vLLM is not installed")

        def test_broken(gpubench):
            assert False, "the kernel raised"

        def test_forgot_to_record(gpubench):
            pass
    """)
    result = pytester.runpytest_subprocess(*FAST, "-q", *workers)
    result.assert_outcomes(skipped=3, failed=1, passed=1)
    assert ("gpubench: 0 of 5 cells measured: 3 skipped (needs the serving extra; 1 for other reasons, -rs lists "
            "them), 1 failed, 1 ran without recording a figure") in result.stdout.lines


def test_a_cell_flags_its_own_figure_in_the_table_the_json_and_saved_reports(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_cells="""
        def test_starved(gpubench):
            gpubench.flag("cpu-starved: GPU idle 83 % waiting on the DataLoader")
            gpubench.record([0.001] * 20)
            gpubench.flag("  second: raised after recording  ")

        def test_fed(gpubench):
            gpubench.record([0.001] * 20)

        def test_two_lines(gpubench):
            gpubench.flag("one\\ntwo")
    """)
    result = pytester.runpytest(*FAST, "--benchmark-json=out.json")
    result.assert_outcomes(passed=2, failed=1)
    lines = result.stdout.lines
    assert any(line.startswith("! test_starved[cpu] ") for line in lines)
    assert any(line.startswith("test_fed[cpu] ") for line in lines)
    note = next(line for line in lines if line.startswith("! test_starved[cpu]: "))
    assert note == ("! test_starved[cpu]: cpu-starved: GPU idle 83 % waiting on the DataLoader; second: raised after "
                    "recording")
    # not the sampler's complaint: the closing line says who raised it
    assert "! 1 cell flagged by the benchmark itself (gpubench.flag): the notes under the table say why" in lines
    assert not any("stopped noisier than the stdrel target" in line for line in lines)
    assert any("ValueError: gpubench.flag('one\\ntwo'): give one non-empty line" in line for line in lines)
    document = json.loads((pytester.path / "out.json").read_text())
    by_name = {b["name"]: b["extra_info"]["gpubench"] for b in document["benchmarks"]}
    assert by_name["test_starved[cpu]"]["flags"] == ["cpu-starved: GPU idle 83 % waiting on the DataLoader",
                                                     "second: raised after recording"]
    assert by_name["test_fed[cpu]"]["flags"] == []

    from pytest_gpubench.record import CellResult
    from pytest_gpubench.report.saved import read_saved_run

    # a report made later from the saved run shows the flag as the run did
    saved = {r.name: CellResult(r).flags for r in read_saved_run(pytester.path / "out.json").records}
    assert saved == {"test_starved[cpu]": by_name["test_starved[cpu]"]["flags"], "test_fed[cpu]": []}
