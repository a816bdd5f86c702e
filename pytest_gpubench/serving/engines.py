"""How each engine is launched, and how it says it is ready: argv for vLLM, SGLang, transformers, or any
command, bound to 127.0.0.1 on the cell's port with tensor parallelism = the cell's GPU count."""

from __future__ import annotations

import ast
import importlib.util
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

ENGINES = ("vllm", "sglang", "transformers", "command")
# engines whose scheduler always batches continuously: there is nothing to turn on
ALWAYS_CONTINUOUS = ("vllm", "sglang")
TRANSFORMERS_CB_OPTION = "--continuous-batching"
# where `transformers serve` declares its options: 5.x (a typer command whose parameter becomes the option) and
# 4.x (a dataclass read by HfArgumentParser, which accepts the dashed spelling too)
TRANSFORMERS_SERVE_MODULES = ("transformers.cli.serve", "transformers.commands.serving")


@dataclass(frozen=True)
class EngineLaunch:
    argv: tuple[str, ...]
    health_path: str
    openai: bool  # speaks the OpenAI API, so a one-token request can prove it ready
    continuous_batching: bool | None = None  # None: not known (a command of the user's own)
    note: str = ""  # what the user asked for and this engine cannot do, said once the server is up


def _executable(name: str) -> str:
    """Prefer the script next to this interpreter (the venv running pytest), then PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def console_script(name: str) -> tuple[str, ...]:
    """argv that runs console script ``name`` of a package this interpreter imports, with this interpreter:
    the server then runs the very package pytest inspected (for its options), and needs no script on PATH
    (``pip install --target DIR`` puts scripts in DIR/bin, which nothing puts on PATH). Falls back to a
    script of that name beside the interpreter or on PATH, for packages installed elsewhere."""
    found = list(entry_points(group="console_scripts", name=name))
    if not found:
        return (_executable(name),)
    point = found[0]
    # sys.argv[0] as the script would have it: some CLIs print their usage with it. `-c` puts the working
    # directory first on sys.path, where a script does not: a checkout of the engine's source there (a vllm/
    # folder) would be imported instead of the installed package, so it comes off again.
    code = (f"import sys, operator, importlib; sys.path[:1] = [p for p in sys.path[:1] if p]; sys.argv[0] = {name!r}; "
            f"sys.exit(operator.attrgetter({point.attr!r})(importlib.import_module({point.module!r}))())")
    return (sys.executable, "-c", code)


def transformers_continuous_batching_option() -> str | None:
    """``--continuous-batching`` when the transformers this interpreter imports has it on `transformers serve`
    (5.x does, and the later 4.x serve commands), else None. Read from the serve command's source, not by importing it: importing it
    imports torch and the serving stack, seconds of the cell's time for one yes or no."""
    for module in TRANSFORMERS_SERVE_MODULES:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):  # transformers missing, or a version without that package
            continue
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            continue
        try:
            tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
        except (OSError, SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            declared = (node.arg if isinstance(node, ast.arg)  # 5.x: Serve.__init__(..., continuous_batching=...)
                        else node.target.id if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                        else None)  # 4.x: ServeArguments.continuous_batching: bool = field(...)
            if declared == "continuous_batching":
                return TRANSFORMERS_CB_OPTION
    return None


def engine_launch(engine: str, *, model: str | None, port: int, gpus: int, args: Sequence[str] = (),
                  argv: Sequence[str] | None = None, continuous_batching: bool = False) -> EngineLaunch:
    if engine not in ENGINES:  # before anything else: "needs model=" would send the user after the wrong mistake
        raise ValueError(f"engine={engine!r}; use one of {', '.join(ENGINES)}")
    host_port = ("--host", "127.0.0.1", "--port", str(port))
    if engine == "command":
        if not argv:
            raise ValueError("engine='command' needs argv=[...] (use '{port}' where the port goes)")
        if continuous_batching:
            raise ValueError("engine='command' runs argv as given: put the engine's own continuous-batching option "
                             "in argv instead of continuous_batching=True")
        return EngineLaunch(tuple(part.replace("{port}", str(port)) for part in argv), "/health", False)
    if not model:
        raise ValueError(f"engine={engine!r} needs model=")
    if engine == "vllm":
        tp = ("--tensor-parallel-size", str(gpus)) if gpus > 1 else ()
        return EngineLaunch((*console_script("vllm"), "serve", model, *host_port, *tp, *args), "/health", True, True)
    if engine == "sglang":
        tp = ("--tp", str(gpus)) if gpus > 1 else ()
        return EngineLaunch((sys.executable, "-m", "sglang.launch_server", "--model-path", model, *host_port, *tp, *args),
                            "/health", True, True)
    device = ("--device", "cpu") if gpus == 0 else ()  # transformers
    batching: tuple[str, ...] = ()
    note = ""
    if continuous_batching:
        option = transformers_continuous_batching_option()
        if option is None:
            note = ("continuous_batching=True: this transformers' `transformers serve` has no continuous batching "
                    "(5.x has --continuous-batching); it serves one request at a time")
        elif option not in args:
            batching = (option,)
    on = bool(batching) or TRANSFORMERS_CB_OPTION in args
    return EngineLaunch((*console_script("transformers"), "serve", model, *host_port, *device, *batching, *args),
                        "/health", True, on, note)
