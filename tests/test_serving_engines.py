"""How engines are launched: continuous batching asked for only where the engine's version has the option,
and console scripts run with the interpreter running pytest (no script on PATH needed)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pytest_gpubench.serving.engines import console_script, engine_launch

REPO = Path(__file__).resolve().parent.parent

# the declarations as `transformers serve` writes them: 5.x's typer command and 4.x's HfArgumentParser dataclass
SERVE_5X = """
class Serve:
    def __init__(self, force_model: str | None = None, continuous_batching: bool = False, device: str = "auto") -> None:
        pass
"""
SERVE_5X_WITHOUT = """
class Serve:
    def __init__(self, force_model: str | None = None, device: str = "auto") -> None:
        pass
"""
SERVING_4X = """
from dataclasses import dataclass, field

@dataclass
class ServeArguments:
    continuous_batching: bool = field(default=False, metadata={"help": "Whether to use continuous batching."})
    device: str = "auto"
"""


def launch_with_fake_transformers(tmp_path: Path, files: dict[str, str]) -> dict[str, Any]:
    """engine_launch("transformers", continuous_batching=True) in a fresh interpreter that imports a stand-in
    transformers package made of ``files``."""
    for relative, text in {"transformers/__init__.py": "", **files}.items():
        target = tmp_path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text))
    code = textwrap.dedent("""
        import json
        from pytest_gpubench.serving.engines import engine_launch, transformers_continuous_batching_option
        plan = engine_launch("transformers", model="/models/m", port=8000, gpus=1, continuous_batching=True)
        print(json.dumps({"option": transformers_continuous_batching_option(), "argv": plan.argv,
                          "on": plan.continuous_batching, "note": plan.note}))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={"PYTHONPATH": f"{tmp_path}:{REPO}", "PATH": "/usr/bin:/bin"})
    return json.loads(done.stdout)


@pytest.mark.parametrize("files", [
    {"transformers/cli/__init__.py": "", "transformers/cli/serve.py": SERVE_5X},
    {"transformers/commands/__init__.py": "", "transformers/commands/serving.py": SERVING_4X},
], ids=["5.x", "4.x"])
def test_continuous_batching_option_is_passed_where_serve_declares_it(tmp_path: Path, files: dict[str, str]) -> None:
    answer = launch_with_fake_transformers(tmp_path, files)
    assert answer["option"] == "--continuous-batching"
    assert answer["argv"][-1] == "--continuous-batching" and answer["on"] is True and answer["note"] == ""


@pytest.mark.parametrize("files", [
    {"transformers/cli/__init__.py": "", "transformers/cli/serve.py": SERVE_5X_WITHOUT},
    {},  # a transformers with no serve command at all
], ids=["serve-without-it", "no-serve"])
def test_no_option_is_passed_where_serve_lacks_it_and_the_cell_is_told(tmp_path: Path, files: dict[str, str]) -> None:
    answer = launch_with_fake_transformers(tmp_path, files)
    assert answer["option"] is None
    assert "--continuous-batching" not in answer["argv"] and answer["on"] is False
    assert "has no continuous batching" in str(answer["note"])


def test_installed_transformers_gets_the_option_only_when_asked() -> None:
    pytest.importorskip("transformers")
    asked = engine_launch("transformers", model="/m", port=8000, gpus=1, continuous_batching=True)
    plain = engine_launch("transformers", model="/m", port=8000, gpus=1)
    assert "--continuous-batching" in asked.argv and asked.continuous_batching is True
    assert "--continuous-batching" not in plain.argv and plain.continuous_batching is False
    # given in args already: not twice
    both = engine_launch("transformers", model="/m", port=8000, gpus=1, args=["--continuous-batching"],
                         continuous_batching=True)
    assert both.argv.count("--continuous-batching") == 1 and both.continuous_batching is True


def test_engines_that_always_batch_continuously_get_no_option() -> None:
    for engine in ("vllm", "sglang"):
        plan = engine_launch(engine, model="/m", port=8000, gpus=2, continuous_batching=True)
        assert plan.continuous_batching is True
        assert not any("continuous" in part for part in plan.argv)
    with pytest.raises(ValueError, match="put the engine's own continuous-batching option in argv"):
        engine_launch("command", model=None, port=8000, gpus=0, argv=["server", "{port}"], continuous_batching=True)
    assert engine_launch("command", model=None, port=8000, gpus=0, argv=["server", "{port}"]).continuous_batching is None


def test_console_script_runs_with_this_interpreter_and_without_path(tmp_path: Path) -> None:
    argv = console_script("pytest")  # a console script every environment running these tests has
    assert argv[0] == sys.executable and argv[1] == "-c"
    # a working directory holding a package of the script's name does not shadow the installed one
    (tmp_path / "pytest").mkdir()
    (tmp_path / "pytest" / "__init__.py").write_text("raise SystemExit('the shadow was imported')\n")
    done = subprocess.run([*argv, "--version"], capture_output=True, text=True, cwd=tmp_path,
                          env={"PATH": "/nonexistent"})
    assert done.returncode == 0, done.stderr
    assert "pytest" in done.stdout + done.stderr
    assert console_script("no-such-console-script-here") == ("no-such-console-script-here",)
