"""--gpu and the other options: bad input is one ERROR line and exit 4; good input names the cells."""

from __future__ import annotations

import pytest

from pytest_gpubench.hardware import LocalInventory

ONE_TEST = """
def test_x(gpubench):
    gpubench.record([0.001])
"""


@pytest.fixture
def host_without_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process runs see a host with no GPU, whatever machine runs these tests."""
    monkeypatch.setattr("pytest_gpubench.session.discover_local_inventory", LocalInventory)


@pytest.fixture
def one_test(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_x=ONE_TEST)
    return pytester


def usage_error_line(result: pytest.RunResult) -> str:
    """The run ended with exit 4 and exactly one line of error output, with no traceback; return that line."""
    assert result.ret == pytest.ExitCode.USAGE_ERROR, (result.ret, result.stdout.str(), result.stderr.str())
    lines = [line for line in result.stderr.lines if line.strip()]
    assert len(lines) == 1, result.stderr.lines
    assert lines[0].startswith("ERROR: "), lines
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    return lines[0]


def collected_ids(result: pytest.RunResult) -> list[str]:
    """Node ids printed by ``--collect-only -q``."""
    return [line for line in result.stdout.lines if "::" in line]


# --- bad --gpu -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("", ["empty GPU spec", "write TYPE[:COUNT]", "local", "cpu"], id="empty"),
        pytest.param("H100,", ["--gpu H100,", "empty GPU spec", "write TYPE[:COUNT]"], id="trailing-comma"),
        pytest.param("H100,,cpu", ["empty GPU spec"], id="double-comma"),
        pytest.param("H1000", ["unknown GPU type 'H1000'", "did you mean H100?", "known types: B200, H200, H100"],
                     id="unknown-type"),
        pytest.param("H100:x", ["'H100:x'", "count must be a whole number from 1 to 8", "as in H100:2"], id="count-x"),
        pytest.param("H100:", ["'H100:'", "count must be a whole number from 1 to 8"], id="count-missing"),
        pytest.param("H100:-1", ["'H100:-1'", "count must be a whole number from 1 to 8"], id="count-negative"),
        pytest.param("H100:1.5", ["'H100:1.5'", "count must be a whole number from 1 to 8"], id="count-fraction"),
        pytest.param("H100:16", ["'H100:16'", "1 to 8 GPUs of one host", "write H100:8 or fewer"], id="count-16"),
        pytest.param("H100:0", ["'H100:0'", "1 to 8 GPUs of one host", "write H100:8 or fewer"], id="count-0"),
        pytest.param("a100:9", ["'a100:9'", "write A100-40GB:8 or fewer"], id="alias-count-9"),
        pytest.param("cpu:2", ["'cpu:2'", "cpu takes no count", "write cpu"], id="cpu-count"),
        pytest.param("local:3", ["'local:3'", "local takes no count", "write local"], id="local-count"),
        pytest.param("H100:8:2", ["'H100:8:2'", "count must be a whole number"], id="two-counts"),
        pytest.param("@@", ["'@@' is not a GPU spec", "write TYPE[:COUNT] such as H100:8"], id="garbage"),
        pytest.param("H100 x2", ["'H100 x2' is not a GPU spec"], id="space"),
        pytest.param("cpu,H1000", ["--gpu cpu,H1000", "unknown GPU type 'H1000'"], id="bad-after-good"),
    ],
)
def test_bad_gpu_spec_is_one_usage_error_line(one_test: pytest.Pytester, value: str, expected: list[str]) -> None:
    # --gpu=VALUE: as a separate argument, "@@" would be read by argparse as a file of arguments
    line = usage_error_line(one_test.runpytest(f"--gpu={value}"))
    assert line.startswith("ERROR: --gpu")
    for words in expected:
        assert words in line, (words, line)


def test_bad_spec_in_a_second_gpu_option_is_reported(one_test: pytest.Pytester) -> None:
    line = usage_error_line(one_test.runpytest("--gpu", "cpu", "--gpu", "T4:100"))
    assert line == "ERROR: --gpu cpu,T4:100: 'T4:100': a cell gets 1 to 8 GPUs of one host; write T4:8 or fewer"


def test_unknown_type_far_from_any_known_one_gives_no_guess(one_test: pytest.Pytester) -> None:
    line = usage_error_line(one_test.runpytest("--gpu", "Quadro"))
    assert "unknown GPU type 'Quadro'" in line
    assert "did you mean" not in line
    assert "known types: B200, H200, H100, A100-80GB, A100-40GB, L40S, A10, A10G, L4, T4 (or local, cpu)" in line


# --- bad [tool.gpubench] -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        pytest.param('gpu = ["H1000"]', ["pyproject.toml [tool.gpubench] gpu H1000", "did you mean H100?"],
                     id="unknown-type"),
        pytest.param('gpu = "H100:x"', ["[tool.gpubench] gpu H100:x", "count must be a whole number"], id="bad-count"),
        pytest.param("gpu = 8", ["[tool.gpubench] gpu", 'write a list of GPU specs, e.g. gpu = ["H100:8", "cpu"]'],
                     id="not-a-list"),
        pytest.param('gpus = ["H100"]', ["unknown key 'gpus' in [tool.gpubench]", "known keys: gpu, max_time"],
                     id="unknown-key"),
        pytest.param("max_time = -2", ["[tool.gpubench] max_time: -2 is not a duration", "seconds greater than 0"],
                     id="max-time"),
        pytest.param('stdrel = "5"', ["[tool.gpubench] stdrel", "'5' is not a fraction", "0.5% or 0.005"], id="stdrel"),
        pytest.param('cache = "warm"', ["[tool.gpubench] cache", "'warm' is not a cache mode", "cold or hot"],
                     id="cache"),
        pytest.param("min_samples = true", ["[tool.gpubench] min_samples", "not a count"], id="min-samples-bool"),
        pytest.param("variants = 3", ["variants must be a table"], id="variants-not-table"),
        pytest.param("prices = {H1000 = 1.0}", ["prices: unknown GPU type 'H1000'", "did you mean H100?"],
                     id="prices-unknown-type"),
        pytest.param("prices = {H100 = -1}", ["prices.H100 = -1", "dollars per GPU-hour"], id="prices-negative"),
    ],
)
def test_bad_config_table_is_one_usage_error_line(one_test: pytest.Pytester, table: str, expected: list[str]) -> None:
    one_test.makepyprojecttoml(f"[tool.gpubench]\n{table}\n")
    line = usage_error_line(one_test.runpytest())
    assert "pyproject.toml" in line
    for words in expected:
        assert words in line, (words, line)


# --- bad numeric options -------------------------------------------------------------------------


NOT_A_DURATION = "is not a duration; write seconds greater than 0, e.g. 2.5"
NOT_A_FRACTION = "is not a fraction; write e.g. 0.5% or 0.005"
NOT_A_COUNT = "is not a count; write a whole number of at least 1, e.g. 10"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--gpubench-max-time=-1"], f"ERROR: --gpubench-max-time: '-1' {NOT_A_DURATION}"),
        (["--gpubench-max-time=soon"], f"ERROR: --gpubench-max-time: 'soon' {NOT_A_DURATION}"),
        (["--gpubench-max-time=inf"], f"ERROR: --gpubench-max-time: 'inf' {NOT_A_DURATION}"),
        (["--gpubench-min-time=nan"], f"ERROR: --gpubench-min-time: 'nan' {NOT_A_DURATION}"),
        (["--gpubench-warmup=0"], f"ERROR: --gpubench-warmup: '0' {NOT_A_DURATION}"),
        (["--gpubench-stdrel=2"], f"ERROR: --gpubench-stdrel: '2' {NOT_A_FRACTION}"),
        (["--gpubench-stdrel=150%"], f"ERROR: --gpubench-stdrel: '150%' {NOT_A_FRACTION}"),
        (["--gpubench-stdrel=0"], f"ERROR: --gpubench-stdrel: '0' {NOT_A_FRACTION}"),
        (["--gpubench-cache=warm"], "ERROR: --gpubench-cache: 'warm' is not a cache mode; write cold or hot"),
        (["--gpubench-min-samples=0"], f"ERROR: --gpubench-min-samples: '0' {NOT_A_COUNT}"),
        (["--gpubench-min-samples=2.5"], f"ERROR: --gpubench-min-samples: '2.5' {NOT_A_COUNT}"),
        (
            ["--gpubench-min-time=2", "--gpubench-max-time=1"],
            "ERROR: min_time 2 s is above max_time 1 s; raise max_time or lower min_time",
        ),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_numeric_option_is_one_usage_error_line(one_test: pytest.Pytester, args: list[str], expected: str) -> None:
    assert usage_error_line(one_test.runpytest(*args)) == expected


@pytest.mark.parametrize(("value", "shown"), [("2", "2"), ("1.5s", "1.5")])
def test_durations_accept_seconds_with_or_without_unit(one_test: pytest.Pytester, value: str, shown: str) -> None:
    # min_time above max_time proves the value was read: the error quotes it back in seconds.
    line = usage_error_line(one_test.runpytest(f"--gpubench-min-time={value}", "--gpubench-max-time=0.5"))
    assert line == f"ERROR: min_time {shown} s is above max_time 0.5 s; raise max_time or lower min_time"


# --- good --gpu ----------------------------------------------------------------------------------


def test_cpu_target_is_the_cell_id(one_test: pytest.Pytester) -> None:
    result = one_test.runpytest("--gpu", "cpu", "-v")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1)
    assert "test_x.py::test_x[cpu] PASSED" in result.stdout.str()


def test_target_the_host_lacks_is_skipped_with_the_reason(one_test: pytest.Pytester, host_without_gpu: None) -> None:
    result = one_test.runpytest("--gpu", "H100:8,cpu", "-v", "-rs")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, skipped=1)
    out = result.stdout.str()
    assert "test_x.py::test_x[H100:8] SKIPPED" in out
    assert "SKIPPED [1] test_x.py: needs 8× H100; this host has no GPU" in result.stdout.lines
    assert "test_x.py::test_x[cpu] PASSED" in out
    assert "gpubench: targets H100:8, cpu; host has no GPU" in result.stdout.lines
    assert "gpubench: H100:8 will be skipped: needs 8× H100; this host has no GPU" in result.stdout.lines


def test_alias_becomes_the_catalog_name_in_the_id(one_test: pytest.Pytester) -> None:
    result = one_test.runpytest("--gpu", "A100", "--collect-only", "-q")
    assert collected_ids(result) == ["test_x.py::test_x[A100-40GB:1]"]


def test_type_names_are_case_insensitive(one_test: pytest.Pytester) -> None:
    result = one_test.runpytest("--gpu", "h100:2, a100-80gb ,CPU", "--collect-only", "-q")
    assert collected_ids(result) == [
        "test_x.py::test_x[H100:2]",
        "test_x.py::test_x[A100-80GB:1]",
        "test_x.py::test_x[cpu]",
    ]


def test_local_on_a_host_without_gpu_is_the_cpu(one_test: pytest.Pytester, host_without_gpu: None) -> None:
    result = one_test.runpytest("--gpu", "local", "--collect-only", "-q")
    assert collected_ids(result) == ["test_x.py::test_x[cpu]"]


def test_targets_keep_the_order_given(one_test: pytest.Pytester) -> None:
    result = one_test.runpytest("--gpu", "L4", "--gpu", "cpu,H200:4", "--collect-only", "-q")
    assert collected_ids(result) == ["test_x.py::test_x[L4:1]", "test_x.py::test_x[cpu]", "test_x.py::test_x[H200:4]"]


def test_command_line_overrides_config(one_test: pytest.Pytester) -> None:
    one_test.makepyprojecttoml('[tool.gpubench]\ngpu = ["H100:2"]\n')
    result = one_test.runpytest("--gpu", "cpu", "--collect-only", "-q")
    assert collected_ids(result) == ["test_x.py::test_x[cpu]"]


def test_config_gpu_is_used_without_command_line(one_test: pytest.Pytester) -> None:
    one_test.makepyprojecttoml('[tool.gpubench]\ngpu = ["H100:2", "cpu"]\n')
    result = one_test.runpytest("--collect-only", "-q")
    assert collected_ids(result) == ["test_x.py::test_x[H100:2]", "test_x.py::test_x[cpu]"]


def test_config_gpu_may_be_one_string(one_test: pytest.Pytester) -> None:
    one_test.makepyprojecttoml('[tool.gpubench]\ngpu = "L4:2"\n')
    result = one_test.runpytest("--collect-only", "-q")
    assert collected_ids(result) == ["test_x.py::test_x[L4:2]"]


def test_duplicate_specs_collapse(one_test: pytest.Pytester) -> None:
    result = one_test.runpytest(
        "--gpu", "cpu,cpu", "--gpu", "A100", "--gpu", "a100-40gb:1,cpu", "--collect-only", "-q"
    )
    assert collected_ids(result) == ["test_x.py::test_x[cpu]", "test_x.py::test_x[A100-40GB:1]"]
    result.stdout.fnmatch_lines(["*2 tests collected*"])


def test_empty_gpu_list_in_config_is_a_usage_error(one_test: pytest.Pytester) -> None:
    one_test.makepyprojecttoml("[tool.gpubench]\ngpu = []\n")
    line = usage_error_line(one_test.runpytest())
    assert "gpu" in line
