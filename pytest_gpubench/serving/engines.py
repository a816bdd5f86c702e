"""How each engine is launched, and how it says it is ready: argv for vLLM, SGLang, transformers, or any
command, bound to 127.0.0.1 on the cell's port with tensor parallelism = the cell's GPU count."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ENGINES = ("vllm", "sglang", "transformers", "command")


@dataclass(frozen=True)
class EngineLaunch:
    argv: tuple[str, ...]
    health_path: str
    openai: bool  # speaks the OpenAI API, so a one-token request can prove it ready


def _executable(name: str) -> str:
    """Prefer the script next to this interpreter (the venv running pytest), then PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def engine_launch(engine: str, *, model: str | None, port: int, gpus: int, args: Sequence[str] = (),
                  argv: Sequence[str] | None = None) -> EngineLaunch:
    if engine not in ENGINES:  # before anything else: "needs model=" would send the user after the wrong mistake
        raise ValueError(f"engine={engine!r}; use one of {', '.join(ENGINES)}")
    host_port = ("--host", "127.0.0.1", "--port", str(port))
    if engine == "command":
        if not argv:
            raise ValueError("engine='command' needs argv=[...] (use '{port}' where the port goes)")
        return EngineLaunch(tuple(part.replace("{port}", str(port)) for part in argv), "/health", False)
    if not model:
        raise ValueError(f"engine={engine!r} needs model=")
    if engine == "vllm":
        tp = ("--tensor-parallel-size", str(gpus)) if gpus > 1 else ()
        return EngineLaunch((_executable("vllm"), "serve", model, *host_port, *tp, *args), "/health", True)
    if engine == "sglang":
        tp = ("--tp", str(gpus)) if gpus > 1 else ()
        return EngineLaunch((sys.executable, "-m", "sglang.launch_server", "--model-path", model, *host_port, *tp, *args),
                            "/health", True)
    device = ("--device", "cpu") if gpus == 0 else ()  # transformers
    return EngineLaunch((_executable("transformers"), "serve", model, *host_port, *device, *args), "/health", True)
