"""--modal, offline: the objects built for Modal's SDK, the pre-flight refusals, a cell run through the
executor against a recording stand-in (tests/modal_standin.py), and cleanup under real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_gpubench.executors.modal import (IGNORED, MODELS_DIR, PROJECT_DIR, ModalSettings, build_image,
                                             memory_refusal, ModelNeed, sandbox_options)
from pytest_gpubench.hardware import Catalog, Target

from modal_standin import CONFTEST

ONE_H100 = "0, NVIDIA H100 80GB HBM3, 81559, GPU-h100a, 580.159.04, 1980, 2619\n"
CELL = """
import time
import pytest

@pytest.mark.parametrize("n", [1, 2])
def test_cell(gpubench, n):
    gpubench.extra_info["n"] = n
    gpubench.record([0.001 * n, 0.0011 * n, 0.0009 * n, 0.001 * n, 0.00105 * n], metrics={"n": n})
"""


def h100(count: int = 1) -> Target:
    return Target(Catalog().lookup("H100"), count)


class Recorder:
    """A fake ``modal`` module that records every call made on it and on what it returns."""

    def __init__(self, name: str = "modal", calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] | None = None) -> None:
        self._name = name
        self.calls = calls if calls is not None else []

    def __getattr__(self, attr: str) -> Recorder:
        return Recorder(f"{self._name}.{attr}", self.calls)

    def __call__(self, *args: Any, **kwargs: Any) -> Recorder:
        self.calls.append((self._name, args, kwargs))
        return Recorder(f"{self._name}()", self.calls)


def test_image_and_sandbox_are_built_with_the_gpu_timeout_mounts_and_secrets(tmp_path: Path) -> None:
    settings = ModalSettings(requirements=("torch==2.11.0", "vllm==0.10.1"), timeout_s=1800, hf_secret="huggingface-secret",
                             secrets=("wandb",), volume="my-cache")
    fake = Recorder()
    build_image(fake, settings, tmp_path)
    options = sandbox_options(fake, "APP", "IMAGE", "H100:2", settings, {"gpubench-run": "r1"}, {"A": "1"})
    names = [name.removeprefix("modal.") for name, _, _ in fake.calls]
    assert names[:6] == ["Image.debian_slim", "Image.debian_slim().apt_install", "Image.debian_slim().apt_install().pip_install",
                         "Image.debian_slim().apt_install().pip_install().env",
                         "Image.debian_slim().apt_install().pip_install().env().add_local_python_source",
                         "Image.debian_slim().apt_install().pip_install().env().add_local_python_source().add_local_dir"]
    by_name = {name.removeprefix("modal.").rsplit(".", 1)[-1]: (args, kwargs) for name, args, kwargs in fake.calls}
    assert by_name["debian_slim"] == ((), {"python_version": "3.12"})
    assert by_name["pip_install"] == (("torch==2.11.0", "vllm==0.10.1"), {})
    assert by_name["add_local_python_source"] == (("pytest_gpubench",), {})
    assert by_name["add_local_dir"] == ((tmp_path,), {"remote_path": PROJECT_DIR, "ignore": IGNORED})
    assert [args for name, args, _ in fake.calls if name.endswith("Secret.from_name")] == [("wandb",), ("huggingface-secret",)]
    assert by_name["from_name"] == (("my-cache",), {"create_if_missing": True})
    assert options["gpu"] == "H100:2" and options["timeout"] == 1800 and options["workdir"] == PROJECT_DIR
    assert options["app"] == "APP" and options["image"] == "IMAGE" and list(options["volumes"]) == [MODELS_DIR]
    assert options["tags"] == {"gpubench-run": "r1"} and options["env"] == {"A": "1"} and len(options["secrets"]) == 2


def test_the_real_sdk_accepts_the_same_calls_offline(tmp_path: Path) -> None:
    modal = pytest.importorskip("modal")
    settings = ModalSettings(hf_secret="huggingface-secret")
    image = build_image(modal, settings, tmp_path)
    assert isinstance(image, modal.Image)
    options = sandbox_options(modal, modal.App("gpubench-offline"), image, "H100:8", settings, {}, {})
    assert isinstance(options["volumes"][MODELS_DIR], modal.Volume)
    assert all(isinstance(s, modal.Secret) for s in options["secrets"])


def test_a_model_too_large_for_its_target_is_refused_with_the_figures() -> None:
    deepseek = ModelNeed("deepseek-ai/DeepSeek-V2", params_b=236, dtype="bf16")
    refusal = memory_refusal(deepseek, h100(4))
    assert refusal == ("[model-too-large] deepseek-ai/DeepSeek-V2: 236B parameters in bf16 need about 528 GiB with "
                       "1.2x overhead; H100:4 has 320 GiB; use H100:7")
    assert memory_refusal(deepseek, h100(8)) is None
    assert memory_refusal(ModelNeed("x"), h100(1)) is None  # nothing declared: nothing refused


def test_no_credentials_fails_fast_with_one_line(tmp_path: Path) -> None:
    pytest.importorskip("modal")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env["HOME"] = str(tmp_path)  # no ~/.modal.toml
    repo = Path(__file__).resolve().parent.parent
    started = time.monotonic()
    completed = subprocess.run([sys.executable, "-m", "pytest", "bench_suites", "--modal", "--gpu", "H100",
                                "-p", "no:cacheprovider"], cwd=repo, env=env, capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    assert completed.returncode == pytest.ExitCode.USAGE_ERROR
    assert elapsed < 15
    output = (completed.stdout + completed.stderr).strip().splitlines()
    assert output == ["ERROR: --modal: no Modal credentials found; run `modal token new` (or set MODAL_TOKEN_ID and "
                      "MODAL_TOKEN_SECRET)"]


@pytest.fixture
def standin(pytester: pytest.Pytester, fake_nvidia_smi: Callable[[str], None], monkeypatch: pytest.MonkeyPatch,
            tmp_path: Path) -> Callable[[], list[dict[str, Any]]]:
    """A project whose --modal runs go to the stand-in, on a host that looks like one H100 (the stand-in's
    "container" is this machine). Returns a reader of the stand-in's record."""
    fake_nvidia_smi(ONE_H100)
    log = tmp_path / "standin.jsonl"
    monkeypatch.setenv("GPUBENCH_STANDIN_LOG", str(log))
    monkeypatch.setenv("GPUBENCH_STANDIN_PROJECT", str(pytester.path))
    monkeypatch.setenv("GPUBENCH_HEARTBEAT_S", "0.5")
    pytester.makeconftest(CONFTEST)

    def events() -> list[dict[str, Any]]:
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return events


def test_cells_on_modal_bring_back_the_record_a_local_run_makes(pytester: pytest.Pytester,
                                                                standin: Callable[[], list[dict[str, Any]]]) -> None:
    pytester.makepyfile(test_cells=CELL)
    local = pytester.runpytest_subprocess("--gpu=H100", "-p", "no:cacheprovider", "--benchmark-json=local.json")
    local.assert_outcomes(passed=2)
    remote = pytester.runpytest_subprocess("--gpu=H100", "--modal", "-p", "no:cacheprovider", "--benchmark-json=modal.json")
    remote.assert_outcomes(passed=2)
    assert "gpubench: Modal: 2 GPU cell(s), estimated $0.26 at 120 s a cell" in remote.stdout.str()
    assert "gpubench: Modal: $" in remote.stdout.str() and "spent on GPUs this run" in remote.stdout.str()
    by_run = {}
    for name in ("local", "modal"):
        by_run[name] = {b["fullname"]: b for b in json.loads((pytester.path / f"{name}.json").read_text())["benchmarks"]}
    assert sorted(by_run["local"]) == sorted(by_run["modal"]) == ["test_cells.py::test_cell[1-H100:1]", "test_cells.py::test_cell[2-H100:1]"]
    for fullname, local_bench in by_run["local"].items():
        modal_bench = by_run["modal"][fullname]
        assert modal_bench["stats"]["data"] == local_bench["stats"]["data"]
        local_details, modal_details = local_bench["extra_info"]["gpubench"], modal_bench["extra_info"]["gpubench"]
        for key in ("target", "timer", "metrics", "n", "p99"):
            assert modal_details[key] == local_details[key], key
        assert modal_details["modal"]["gpu"] == "H100" and modal_details["modal"]["gpu_seconds"] > 0
        assert modal_details["modal"]["cost_usd"] > 0 and modal_details["host"]["gpu"]["name"] == "NVIDIA H100 80GB HBM3"
    events = standin()
    created = [e for e in events if e["event"] == "create"]
    assert len(created) == 1 and created[0]["gpu"] == "H100"  # one container, reused by the second cell
    assert sum(e["event"] == "terminate" for e in events) == 1 and events[-1]["event"] == "app-stop"


def test_the_budget_refuses_a_run_estimated_above_it(pytester: pytest.Pytester,
                                                     standin: Callable[[], list[dict[str, Any]]]) -> None:
    pytester.makepyfile(test_cells=CELL)
    result = pytester.runpytest_subprocess("--gpu=H100:4", "--modal", "--gpubench-budget=0.5", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert ("ERROR: gpubench: Modal: 2 GPU cell(s), estimated $1.05 at 120 s a cell; budget $0.50: over budget; "
            "raise --gpubench-budget, select fewer cells (-k), or lower modal.expected_cell_s if cells are shorter"
            ) in result.stderr.lines
    assert not [e for e in standin() if e["event"] == "create"]  # nothing started


def test_a_gated_model_without_access_is_refused_before_any_gpu(pytester: pytest.Pytester,
                                                               standin: Callable[[], list[dict[str, Any]]],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUBENCH_STANDIN_FAIL_DOWNLOAD", "meta-llama/Llama-3.1-8B-Instruct")
    pytester.makepyfile(test_serve="""
        import pytest

        @pytest.mark.gpubench_model("meta-llama/Llama-3.1-8B-Instruct", params_b=8)
        def test_serve(gpubench):
            gpubench.record([0.001] * 5)
    """)
    result = pytester.runpytest_subprocess("--gpu=H100", "--modal", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    (line,) = [x for x in result.stderr.lines if x.startswith("ERROR:")]
    assert line.startswith("ERROR: [gated-model-or-token] meta-llama/Llama-3.1-8B-Instruct: 401 Client Error")
    assert "`modal secret create huggingface-secret HF_TOKEN=hf_...`" in line
    assert [e["gpu"] for e in standin() if e["event"] == "create"] == [None]  # only the CPU download sandbox


def test_leftovers_of_a_killed_run_are_swept_at_the_next_start(pytester: pytest.Pytester,
                                                              standin: Callable[[], list[dict[str, Any]]],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import getpass
    import socket

    owner = f"{getpass.getuser()}@{socket.gethostname()}"
    monkeypatch.setenv("GPUBENCH_STANDIN_LEFTOVER", json.dumps({"gpubench-owner": owner, "gpubench-run": "an-old-run"}))
    pytester.makepyfile(test_cells=CELL)
    result = pytester.runpytest_subprocess("--gpu=H100", "--modal", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert "gpubench: Modal: terminated sandbox sb-leftover, left running by an earlier run" in result.stdout.str()
    assert {"event": "terminate", "id": "sb-leftover"} in standin()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_cell_terminates_every_sandbox_and_leaves_no_process(
    pytester: pytest.Pytester, standin: Callable[[], list[dict[str, Any]]], sig: signal.Signals
) -> None:
    pytester.makepyfile(test_slow="""
        import time

        def test_slow(gpubench):
            time.sleep(600)
    """)
    # the signal at its default in the child: a suite started as a background job passes SIGINT on ignored
    process = subprocess.Popen([sys.executable, "-m", "pytest", "--gpu=H100", "--modal", "-p", "no:cacheprovider"],
                               cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               preexec_fn=lambda: signal.signal(sig, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not any(e["event"] == "pid" and "pytest_gpubench.runner" in json.dumps(standin()) for e in standin()):
        assert time.monotonic() < deadline and process.poll() is None, "the cell never started in the stand-in"
        time.sleep(0.2)
    time.sleep(1.0)  # the runner is inside the test now
    process.send_signal(sig)
    output, _ = process.communicate(timeout=60)
    events = standin()
    created = {e["id"] for e in events if e["event"] == "create"}
    terminated = {e["id"] for e in events if e["event"] == "terminate"}
    assert created and created <= terminated, output
    assert events[-1]["event"] == "app-stop", output
    for pid in (e["pid"] for e in events if e["event"] == "pid"):
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower(), pid
    assert "Traceback" not in output


def test_xdist_workers_drive_containers_at_once(pytester: pytest.Pytester,
                                               standin: Callable[[], list[dict[str, Any]]]) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile(test_cells=CELL)
    result = pytester.runpytest_subprocess("--gpu=H100", "--modal", "-n", "2", "-p", "no:cacheprovider",
                                           "--benchmark-json=out.json")
    result.assert_outcomes(passed=2)
    events = standin()
    assert sum(e["event"] == "app-start" for e in events) == 2  # one app per worker process
    assert len({e["id"] for e in events if e["event"] == "create"}) == 2
    assert sum(e["event"] == "terminate" for e in events) == 2
    saved = json.loads((pytester.path / "out.json").read_text())["benchmarks"]
    assert len(saved) == 2 and all(b["extra_info"]["gpubench"]["modal"]["cost_usd"] > 0 for b in saved)
    assert "spent on GPUs this run" in result.stdout.str()  # the controller totals what the workers spent
