"""The matrix: a benchmark becomes one test per variant × GPU target, with stable ids (GPU last)."""

from __future__ import annotations

import json

import pytest


def collected_ids(result: pytest.RunResult) -> list[str]:
    """Node ids printed by ``--collect-only -q``."""
    return [line for line in result.stdout.lines if "::" in line]


TWO_VARIANTS = """
[tool.gpubench.variants.flash]
env = {GPUBENCH_TEST_ATTN = "flash"}

[tool.gpubench.variants.sdpa]
env = {GPUBENCH_TEST_ATTN = "sdpa"}
"""


def test_own_parameters_come_before_the_gpu(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_m="""
        import pytest

        @pytest.mark.parametrize("dtype", ["fp32", "bf16"])
        def test_m(gpubench, dtype):
            gpubench.record([0.001])
        """
    )
    result = pytester.runpytest("--gpu", "cpu", "-v")
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    assert "test_m.py::test_m[fp32-cpu] PASSED" in out
    assert "test_m.py::test_m[bf16-cpu] PASSED" in out


def test_gpu_axis_is_innermost_with_several_targets(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_m="""
        import pytest

        @pytest.mark.parametrize("n", [1, 2])
        def test_m(gpubench, n):
            pass
        """
    )
    result = pytester.runpytest("--gpu", "cpu,L4:2", "--collect-only", "-q")
    assert collected_ids(result) == [
        "test_m.py::test_m[1-cpu]",
        "test_m.py::test_m[1-L4:2]",
        "test_m.py::test_m[2-cpu]",
        "test_m.py::test_m[2-L4:2]",
    ]


def test_a_test_without_gpubench_is_not_multiplied(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    result = pytester.runpytest("--gpu", "cpu,L4", "--collect-only", "-q")
    assert collected_ids(result) == ["test_plain.py::test_plain"]


def test_variants_marker_adds_a_variant_axis(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_v="""
        import pytest

        @pytest.mark.variants("flash", "sdpa")
        def test_v(gpubench_variant, gpubench, request):
            assert request.node.name == f"test_v[{gpubench_variant}-cpu]"
            gpubench.record([0.001])
        """
    )
    result = pytester.runpytest("--gpu", "cpu", "-v", "--benchmark-json=out.json")
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    assert "test_v.py::test_v[flash-cpu] PASSED" in out
    assert "test_v.py::test_v[sdpa-cpu] PASSED" in out
    saved = json.loads((pytester.path / "out.json").read_text())
    variants = {b["fullname"]: b["extra_info"]["gpubench"]["variant"] for b in saved["benchmarks"]}
    assert variants == {"test_v.py::test_v[flash-cpu]": "flash", "test_v.py::test_v[sdpa-cpu]": "sdpa"}


def test_variants_from_config_set_their_env_for_the_test_only(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml(TWO_VARIANTS)
    pytester.makepyfile(
        test_v="""
        import os

        def test_v(gpubench_variant, gpubench):
            assert os.environ["GPUBENCH_TEST_ATTN"] == gpubench_variant.name
            assert gpubench_variant.env == {"GPUBENCH_TEST_ATTN": gpubench_variant.name}
            gpubench.record([0.001])

        def test_z_after():
            assert "GPUBENCH_TEST_ATTN" not in os.environ
        """
    )
    result = pytester.runpytest("--gpu", "cpu", "-v")
    result.assert_outcomes(passed=3)
    out = result.stdout.str()
    assert "test_v.py::test_v[flash-cpu] PASSED" in out
    assert "test_v.py::test_v[sdpa-cpu] PASSED" in out


def test_marker_selects_configured_variants_with_their_env(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml(TWO_VARIANTS)
    pytester.makepyfile(
        test_v="""
        import os
        import pytest

        @pytest.mark.variants("sdpa", "eager")
        def test_v(gpubench_variant, gpubench):
            assert os.environ.get("GPUBENCH_TEST_ATTN") == {"sdpa": "sdpa", "eager": None}[gpubench_variant.name]
        """
    )
    result = pytester.runpytest("--gpu", "cpu", "-v")
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    assert "test_v.py::test_v[sdpa-cpu] PASSED" in out
    assert "test_v.py::test_v[eager-cpu] PASSED" in out


def test_variant_without_declared_variants_is_a_collection_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_nv="""
        def test_v(gpubench_variant, gpubench):
            pass
        """
    )
    result = pytester.runpytest("--gpu", "cpu")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.assert_outcomes(errors=1)
    assert (
        "test_nv.py::test_v uses the 'gpubench_variant' fixture but declares no variants; "
        "add @pytest.mark.variants('a', 'b') or a [tool.gpubench.variants] table"
    ) in result.stdout.lines
    assert "Traceback" not in result.stdout.str()


@pytest.mark.parametrize("marker", ["@pytest.mark.variants()", "@pytest.mark.variants('a', 'a')"])
def test_variants_marker_needs_distinct_names(pytester: pytest.Pytester, marker: str) -> None:
    pytester.makepyfile(
        test_dup=f"""
        import pytest

        {marker}
        def test_v(gpubench_variant, gpubench):
            pass
        """
    )
    result = pytester.runpytest("--gpu", "cpu")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.assert_outcomes(errors=1)
    assert (
        "test_dup.py::test_v: @pytest.mark.variants needs distinct names, e.g. variants('fp32', 'bf16')"
    ) in result.stdout.lines


def test_ids_are_stable_across_runs(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyprojecttoml(
        """
        [tool.gpubench.variants.zeta]
        env = {GPUBENCH_TEST_ATTN = "z"}

        [tool.gpubench.variants.alpha]
        env = {GPUBENCH_TEST_ATTN = "a"}

        [tool.gpubench.variants.mid]
        """
    )
    pytester.makepyfile(
        test_s="""
        import pytest

        @pytest.mark.parametrize("size", [1024, 64])
        def test_s(gpubench_variant, gpubench, size):
            pass
        """
    )
    args = ("--gpu", "T4:2,cpu", "--gpu", "A100-80GB", "--collect-only", "-q", "-p", "no:cacheprovider")
    runs = []
    for seed in ("1", "2"):  # ids must not depend on str hashing (set or dict ordering)
        monkeypatch.setenv("PYTHONHASHSEED", seed)
        runs.append(collected_ids(pytester.runpytest_subprocess(*args)))
    # the variants of one comparison (same size, same GPU) run back to back
    expected = [
        f"test_s.py::test_s[{size}-{variant}-{gpu}]"
        for size in ("1024", "64")
        for gpu in ("T4:2", "cpu", "A100-80GB:1")
        for variant in ("zeta", "alpha", "mid")
    ]
    assert runs[0] == expected
    assert runs[1] == expected


def test_benchmark_and_gpubench_together_is_an_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_b="""
        def test_b(benchmark, gpubench):
            gpubench.record([0.001])
        """
    )
    result = pytester.runpytest("--gpu", "cpu")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(errors=1)
    assert (
        "test_b.py::test_b[cpu]: use either the benchmark or the gpubench fixture, not both"
    ) in result.stdout.lines
