"""Commits × variants as real environments: a local git repository holds a tiny package in three states
(a slow function; a faster one; a patch that speeds up the slow one), declared as baseline / human / agent.
Each variant's cells run in a virtual environment of its own, built once from its recipe."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

SLOW = '''
VERSION = "1.0-slow"
import time

def work(seconds):
    time.sleep(seconds * 2.0)
'''
FAST = SLOW.replace('"1.0-slow"', '"2.0-fast"').replace("seconds * 2.0", "seconds * 1.0")
AGENT = SLOW.replace('"1.0-slow"', '"1.0-slow+agent"').replace("seconds * 2.0", "seconds * 1.25")
SETUP = '''
from setuptools import setup
setup(name="tinypkg", version="0.0", py_modules=["tinypkg"])
'''
SUITE = '''
import pytest

@pytest.mark.parametrize("ms", [2])
def test_work(gpubench, gpubench_variant, ms):
    import tinypkg  # in the test: the process that collects cells need not have the code under test
    gpubench.extra_info["module_file"] = tinypkg.__file__
    gpubench.extra_info["version"] = tinypkg.VERSION
    gpubench(tinypkg.work, ms / 1000)
'''
FAST_OPTIONS = ["--gpubench-max-time=0.4", "--gpubench-min-time=0.1", "--gpubench-warmup=0.01",
                "--gpubench-min-samples=10", "-p", "no:cacheprovider"]


def git(repo: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(repo)}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout.strip()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The package's repository (commit 1 slow, commit 2 fast), an agent patch on commit 1 that applies,
    one that does not, and an environment cache shared by this module's tests."""
    root = tmp_path_factory.mktemp("tinypkg")
    repo = root / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "setup.py").write_text(SETUP)
    (repo / "tinypkg.py").write_text(SLOW)
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "slow")
    (repo / "tinypkg.py").write_text(AGENT)
    agent_diff = git(repo, "diff") + "\n"
    git(repo, "checkout", "-q", "--", "tinypkg.py")
    (repo / "tinypkg.py").write_text(FAST)
    git(repo, "commit", "-q", "-am", "fast")
    human = git(repo, "rev-parse", "HEAD")
    (repo / "patches").mkdir()  # the third commit: the candidate patch, made against the slow commit
    agent_patch = repo / "patches" / "agent.diff"
    agent_patch.write_text(agent_diff)
    git(repo, "add", "patches")
    git(repo, "commit", "-q", "-m", "agent patch for the slow commit")
    broken_patch = root / "broken.diff"
    broken_patch.write_text(agent_diff.replace("seconds * 2.0", "seconds * 9.0"))
    return {"repo": repo, "sha": human, "agent": agent_patch, "broken": broken_patch, "envs": root / "envs"}


def declare(pytester: pytest.Pytester, project: dict[str, object], broken_commit: bool = False) -> str:
    name = str(project["sha"])[:8]
    table = f'''
        [tool.gpubench]
        gpu = ["cpu"]
        env_dir = "{project['envs']}"

        [tool.gpubench.source]
        git = "{project['repo']}"

        [tool.gpubench.commits.{name}.variants]
        baseline = {{ ref = "{project['sha']}^" }}
        human = {{ ref = "{project['sha']}" }}
        agent = {{ ref = "{project['sha']}^", patch = "{project['agent']}" }}
    '''
    if broken_commit:
        table += f'''
        [tool.gpubench.commits.broken.variants]
        baseline = {{ ref = "{project['sha']}^" }}
        agent = {{ ref = "{project['sha']}^", patch = "{project['broken']}" }}
        '''
    pytester.makepyprojecttoml(textwrap.dedent(table))
    pytester.makepyfile(test_tiny=SUITE)
    return name


def benchmarks_of(path: Path) -> dict[str, dict[str, object]]:
    return {b["fullname"]: b for b in json.loads(path.read_text())["benchmarks"]}


def test_ids_list_commit_variant_params_gpu(pytester: pytest.Pytester, project: dict[str, object]) -> None:
    name = declare(pytester, project, broken_commit=True)
    result = pytester.runpytest("--collect-only", "-q", "-p", "no:cacheprovider")
    ids = [line for line in result.stdout.lines if line.startswith("test_tiny.py::")]
    assert ids == [f"test_tiny.py::test_work[{name}-{variant}-2-cpu]" for variant in ("baseline", "human", "agent")] + [
        f"test_tiny.py::test_work[broken-{variant}-2-cpu]" for variant in ("baseline", "agent")
    ]
    selected = pytester.runpytest("--collect-only", "-q", "-p", "no:cacheprovider", "--gpubench-variant", "agent")
    assert [line for line in selected.stdout.lines if line.startswith("test_tiny.py::")] == [
        f"test_tiny.py::test_work[{name}-agent-2-cpu]", "test_tiny.py::test_work[broken-agent-2-cpu]"
    ]
    one_commit = pytester.runpytest(*FAST_OPTIONS, "--gpubench-commit", name, "-v")
    one_commit.assert_outcomes(passed=3)
    assert "broken" not in one_commit.stdout.str()
    unknown = pytester.runpytest("--collect-only", "--gpubench-commit", "nope")
    assert unknown.ret == pytest.ExitCode.USAGE_ERROR
    assert unknown.stderr.lines[0].startswith("ERROR: --gpubench-commit nope: no commit named 'nope'; declared: ")


def test_each_variant_runs_its_own_code_in_an_environment_built_once(pytester: pytest.Pytester,
                                                                     project: dict[str, object]) -> None:
    name = declare(pytester, project)
    first = pytester.runpytest(*FAST_OPTIONS, "--benchmark-json=first.json")
    first.assert_outcomes(passed=3)
    cells = benchmarks_of(pytester.path / "first.json")
    details = {variant: cells[f"test_tiny.py::test_work[{name}-{variant}-2-cpu]"]["extra_info"]["gpubench"]
               for variant in ("baseline", "human", "agent")}
    assert {v: d["version"] for v, d in details.items()} == {
        "baseline": "1.0-slow", "human": "2.0-fast", "agent": "1.0-slow+agent"}
    roots = {v: Path(d["module_file"]).resolve() for v, d in details.items()}
    for variant, module_file in roots.items():  # each imported from its own environment, not from the repo
        assert module_file.is_relative_to(Path(str(project["envs"])).resolve()), (variant, module_file)
        assert details[variant]["environment"]["name"] == f"{name}/{variant}"
    assert len({d["environment"]["key"] for d in details.values()}) == 3
    # the report ranks them: human 2x, agent 1.6x, both improved, with intervals around the truth
    speedups = json.loads((pytester.path / "first.json").read_text())["gpubench"]["speedups"]
    (comparison,) = speedups["comparisons"]
    by_variant = {row["variant"]: row for row in comparison["variants"]}
    assert comparison["baseline_variant"] == "baseline" and comparison["commit"] == name
    assert 1.8 < by_variant["human"]["speedup"] < 2.2 and by_variant["human"]["verdict"] == "improved"
    assert 1.45 < by_variant["agent"]["speedup"] < 1.75 and by_variant["agent"]["verdict"] == "improved"
    for row in by_variant.values():
        assert row["low"] <= row["speedup"] <= row["high"]
    assert speedups["totals"]["human"]["improved"] == 1
    text = first.stdout.str()
    assert f"variants of commit {name}: median in " in text and "speed-up = baseline time / variant time" in text
    assert "human: over 1 commit, 1 comparison: 1 improved, 0 regressed, 0 unchanged" in text

    second = pytester.runpytest(*FAST_OPTIONS, "--benchmark-json=second.json")
    second.assert_outcomes(passed=3)
    again = benchmarks_of(pytester.path / "second.json")
    envs_again = [b["extra_info"]["gpubench"]["environment"] for b in again.values()]
    assert [e["built_now"] for e in envs_again] == [False, False, False]
    assert {e["key"] for e in envs_again} == {d["environment"]["key"] for d in details.values()}


def test_a_patch_that_does_not_apply_fails_only_its_cells(pytester: pytest.Pytester, project: dict[str, object]) -> None:
    name = declare(pytester, project, broken_commit=True)
    result = pytester.runpytest(*FAST_OPTIONS, "-rE")
    result.assert_outcomes(passed=4, errors=1)
    output = result.stdout.str()
    # (with CI set, pytest prints the whole failure in the short summary: look for the line, not a position)
    assert any(line.startswith("ERROR test_tiny.py::test_work[broken-agent-2-cpu]") for line in result.stdout.lines)
    assert "[env-build-failed] step 'apply patch' failed: `git apply --verbose" in output
    assert "error: patch failed: tinypkg.py" in output  # git apply's own words
    assert f"test_work[{name}-agent-2-cpu] PASSED" in pytester.runpytest(*FAST_OPTIONS, "-v").stdout.str()


def test_selection_and_xdist_run_the_same_cells(pytester: pytest.Pytester, project: dict[str, object]) -> None:
    pytest.importorskip("xdist")
    name = declare(pytester, project)
    only_human = pytester.runpytest(*FAST_OPTIONS, "--gpubench-variant", "human", "--benchmark-json=h.json")
    only_human.assert_outcomes(passed=1)
    assert list(benchmarks_of(pytester.path / "h.json")) == [f"test_tiny.py::test_work[{name}-human-2-cpu]"]
    parallel = pytester.runpytest(*FAST_OPTIONS, "-n", "2", "--benchmark-json=p.json")
    parallel.assert_outcomes(passed=3)
    cells = benchmarks_of(pytester.path / "p.json")
    assert sorted(cells) == sorted(f"test_tiny.py::test_work[{name}-{v}-2-cpu]" for v in ("baseline", "human", "agent"))
    versions = {b["extra_info"]["gpubench"]["variant"]: b["extra_info"]["gpubench"]["version"] for b in cells.values()}
    assert versions == {"baseline": "1.0-slow", "human": "2.0-fast", "agent": "1.0-slow+agent"}


def test_a_cell_that_cannot_import_or_that_kills_its_runner_says_so(pytester: pytest.Pytester, tmp_path: Path) -> None:
    package = tmp_path / "brokenpkg"
    package.mkdir()
    (package / "setup.py").write_text('from setuptools import setup\nsetup(name="brokenpkg", version="0", py_modules=["brokenpkg"])\n')
    (package / "brokenpkg.py").write_text("import os\n\ndef crash():\n    os._exit(3)\n")
    pytester.makepyprojecttoml(f'''
        [tool.gpubench]
        gpu = ["cpu"]
        env_dir = "{tmp_path / 'envs'}"
        [tool.gpubench.variants.only]
        path = "{package}"
    ''')
    pytester.makepyfile(test_faults="""
        import os
        if os.environ.get("GPUBENCH_RUNNER_ENV"):
            import module_that_is_not_there  # this file does not import in the variant's environment

        def test_never(gpubench):
            gpubench.record([0.001] * 5)
    """)
    not_there = pytester.runpytest("-p", "no:cacheprovider")
    not_there.assert_outcomes(errors=1)
    assert "[not-run-in-environment] test_faults.py::test_never[only-cpu] in only: it was not collected there" in \
        not_there.stdout.str()
    assert "No module named 'module_that_is_not_there'" in not_there.stdout.str()

    pytester.makepyfile(test_faults="""
        def test_crash(gpubench):
            import brokenpkg
            brokenpkg.crash()
    """)
    crashed = pytester.runpytest("-p", "no:cacheprovider")
    crashed.assert_outcomes(failed=1)
    assert "[runner-crashed] the runner in only exited with 3 while the cell ran" in crashed.stdout.str()
    assert "gpubench runner in only" in crashed.stdout.str()  # the runner's whole log is attached
