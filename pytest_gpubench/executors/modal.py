"""The Modal executor: with ``--modal``, each GPU cell runs in a Modal container with that GPU.

How a cell runs there. One ephemeral app per pytest process (``app.run()`` under ``modal.enable_output()``).
A GPU container is a ``modal.Sandbox`` built from one image — the suite's requirements, pytest-gpubench's
own source and the project folder — with the target's GPU string (``H100:8``), a timeout, the weights
Volume and the secrets. The whole test item runs in it through ``python -m pytest_gpubench.runner``
(``Sandbox.exec``), exactly as the subprocess executor runs it locally: the reports come back as JSON
lines, the call report carrying the record. The runner's stdout and stderr stream live into
``gpubench-logs/<cell>/runner.log``, and a heartbeat shows the last line. A sandbox is kept for the next
cell with the same GPU string, so the image pull, CUDA start-up and weight cache are paid once. A server
cell starts its engine inside the same container, with the load generator beside it; its full log and
failure class come back in the reports as they would locally. A variant with code of its own is built
inside the container, and its environment is cached in the Volume.

Before any GPU starts: credentials (one line naming ``modal token new``), every target's GPU known to
Modal, each declared model's memory against its target, the model weights downloaded into the Volume by
a CPU sandbox (a gated model with no token fails there, with the exact fix), and an estimate of the
run's cost against ``--gpubench-budget``. While it runs: each cell records its GPU-seconds and cost,
and no new cell starts once the spend reaches the budget. However it ends — Ctrl-C, SIGTERM, a crash —
every sandbox is terminated and the app stops; the next run sweeps sandboxes that an earlier, killed run
left behind (they carry tags naming this user and host).

The SDK is reached through :class:`ModalDriver`, a thin adapter; tests put a stand-in in its place with
the ``pytest_gpubench_modal_driver`` hook.
"""

from __future__ import annotations

import getpass
import math
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import pytest

from ..hardware import Target
from ..reports import attach, failure_reports, log_dir_for, record_of
from .subprocess import reports_from_runner, runner_argv

PROJECT_DIR = "/root/project"
MODELS_DIR = "/models"
OUT_DIR = "/tmp/gpubench"
# what Modal's `gpu=` accepts (modal.com/docs/guide/gpu); our catalog's names are a subset
MODAL_GPU_TYPES = ("T4", "L4", "A10", "A10G", "L40S", "A100", "A100-40GB", "A100-80GB", "RTX-PRO-6000", "H100",
                   "H100!", "H200", "B200", "B200+")
IGNORED = [".git", ".venv", "**/__pycache__", ".benchmarks", "gpubench-logs", "*.egg-info", ".pytest_cache"]
INFRA_RETRIES = 2
BYTES_PER_PARAM = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}
MEMORY_OVERHEAD = 1.2  # activations, KV cache and the CUDA context on top of the weights
OWNER_TAG = "gpubench-owner"
RUN_TAG = "gpubench-run"
MODEL_MARKER = "gpubench_model"


@dataclass(frozen=True)
class ModalSettings:
    app_name: str = "pytest-gpubench"
    python: str = "3.12"
    requirements: tuple[str, ...] = ("torch", "numpy", "pytest>=8", "pytest-benchmark>=5.1", "huggingface_hub")
    timeout_s: int = 3600
    volume: str = "gpubench-cache"
    hf_secret: str | None = None
    secrets: tuple[str, ...] = ()
    budget_usd: float | None = None
    expected_cell_s: float = 120.0
    keep_warm: bool = True


MODAL_KEYS = ("app_name", "python", "requirements", "timeout", "volume", "hf_secret", "secrets", "budget",
              "expected_cell_s", "keep_warm")


def load_modal_settings(config: pytest.Config, table: dict[str, Any], where: str) -> ModalSettings:
    """[tool.gpubench.modal] and --gpubench-budget; each bad value is one usage line."""
    from ..options import parse_seconds

    raw = table.get("modal", {})
    if not isinstance(raw, dict):
        raise pytest.UsageError(f"{where} modal: write a table, e.g. [tool.gpubench.modal] requirements = [\"torch\"]")
    unknown = sorted(set(raw) - set(MODAL_KEYS))
    if unknown:
        raise pytest.UsageError(f"{where} modal: unknown key {unknown[0]!r}; known keys: {', '.join(MODAL_KEYS)}")
    settings = ModalSettings()
    changes: dict[str, Any] = {}
    for key in ("app_name", "python", "volume", "hf_secret"):
        if key in raw:
            if not isinstance(raw[key], str) or not raw[key]:
                raise pytest.UsageError(f"{where} modal.{key}: write a non-empty string")
            changes[key] = raw[key]
    for key in ("requirements", "secrets"):
        if key in raw:
            if not isinstance(raw[key], list) or not all(isinstance(v, str) for v in raw[key]):
                raise pytest.UsageError(f"{where} modal.{key}: write a list of strings")
            changes[key] = tuple(raw[key])
    if "timeout" in raw:
        changes["timeout_s"] = int(parse_seconds(raw["timeout"], f"{where} modal.timeout"))
    if "expected_cell_s" in raw:
        changes["expected_cell_s"] = parse_seconds(raw["expected_cell_s"], f"{where} modal.expected_cell_s")
    if "keep_warm" in raw:
        if not isinstance(raw["keep_warm"], bool):
            raise pytest.UsageError(f"{where} modal.keep_warm: write true or false")
        changes["keep_warm"] = raw["keep_warm"]
    budget = config.getoption("gpubench_budget")
    origin = "--gpubench-budget"
    if budget is None and "budget" in raw:
        budget, origin = raw["budget"], f"{where} modal.budget"
    if budget is not None:
        try:
            value = float(str(budget).strip().lstrip("$"))
        except ValueError:
            value = -1.0
        if not value > 0 or not math.isfinite(value):
            raise pytest.UsageError(f"{origin}: {budget!r} is not an amount; write dollars, e.g. 25 or 2.50")
        changes["budget_usd"] = value
    return replace(settings, **changes)


def modal_gpu(target: Target) -> str:
    assert target.gpu_type is not None
    return target.gpu_type.name if target.count == 1 else f"{target.gpu_type.name}:{target.count}"


def check_credentials() -> None:
    """Fails at once, with the fix, when the SDK is missing or no token is configured."""
    try:
        import modal.config
    except ImportError:
        raise pytest.UsageError("--modal needs the Modal SDK: pip install 'pytest-gpubench[modal]'") from None
    if not (modal.config.config.get("token_id") and modal.config.config.get("token_secret")):
        raise pytest.UsageError("--modal: no Modal credentials found; run `modal token new` (or set MODAL_TOKEN_ID "
                               "and MODAL_TOKEN_SECRET)")


def check_gpu_types(targets: Iterable[Target]) -> None:
    for target in targets:
        if target.gpu_type is not None and target.gpu_type.name not in MODAL_GPU_TYPES:
            raise pytest.UsageError(f"--modal: Modal has no {target.gpu_type.name} GPUs; it offers "
                                    f"{', '.join(MODAL_GPU_TYPES)}")


# --- models: memory and weights -----------------------------------------------------------------


@dataclass(frozen=True)
class ModelNeed:
    """A model a cell serves, from ``@pytest.mark.gpubench_model(name, params_b=..., dtype=..., gated=...)``."""

    name: str
    params_b: float | None = None
    dtype: str = "bf16"

    @property
    def memory_gib(self) -> float | None:
        if self.params_b is None:
            return None
        return self.params_b * 1e9 * BYTES_PER_PARAM.get(self.dtype, 2.0) * MEMORY_OVERHEAD / 2**30


def model_of(item: pytest.Item) -> ModelNeed | None:
    marker = item.get_closest_marker(MODEL_MARKER)
    if marker is None or not marker.args:
        return None
    return ModelNeed(str(marker.args[0]), marker.kwargs.get("params_b"), str(marker.kwargs.get("dtype", "bf16")))


def memory_refusal(model: ModelNeed, target: Target) -> str | None:
    """Why ``target`` cannot hold ``model``, with the figures; None when it can (or nothing is known)."""
    need = model.memory_gib
    if need is None or target.gpu_type is None:
        return None
    have = target.gpu_type.memory_gib * target.count
    if need <= have:
        return None
    fits = math.ceil(need / target.gpu_type.memory_gib)
    hint = (f"use {target.gpu_type.name}:{fits}" if fits <= 8 else "use a larger GPU type")
    return (f"[model-too-large] {model.name}: {model.params_b:g}B parameters in {model.dtype} need about "
            f"{need:.0f} GiB with {MEMORY_OVERHEAD:.1f}x overhead; {target.id} has {have:.0f} GiB; {hint}")


# --- cost ---------------------------------------------------------------------------------------


def estimate_usd(targets: Iterable[Target], expected_cell_s: float) -> float:
    return sum((t.price_per_hour or 0.0) * expected_cell_s / 3600 for t in targets)


class Ledger:
    """What this run has spent on GPUs, shared by every process of the run (xdist workers) through a file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def add(self, usd: float) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(f"{usd:.6f}\n")

    def spent(self) -> float:
        try:
            return sum(float(x) for x in self.path.read_text().split())
        except OSError:
            return 0.0


# --- the SDK adapter ----------------------------------------------------------------------------


class ProcessHandle(Protocol):
    def lines(self) -> Iterator[str]: ...
    def wait(self) -> int: ...


class ModalDriver(Protocol):
    """The calls the executor makes to Modal; thin, so live tests cover what a stand-in cannot."""

    def running_app(self, settings: ModalSettings) -> Any: ...  # a context manager: the ephemeral app
    def image(self, settings: ModalSettings, project: Path) -> Any: ...
    def create_sandbox(self, app: Any, image: Any, gpu: str | None, settings: ModalSettings,
                       tags: dict[str, str], env: dict[str, str]) -> Any: ...
    def exec(self, sandbox: Any, argv: list[str], env: dict[str, str]) -> ProcessHandle: ...
    def read_text(self, sandbox: Any, path: str) -> str: ...
    def terminate(self, sandbox: Any) -> None: ...
    def sandboxes_tagged(self, tags: dict[str, str]) -> list[Any]: ...
    def tags_of(self, sandbox: Any) -> dict[str, str]: ...


class SdkDriver:
    """ModalDriver over the real ``modal`` SDK."""

    def __init__(self) -> None:
        import modal

        self.modal = modal

    @contextmanager
    def running_app(self, settings: ModalSettings) -> Iterator[Any]:
        app = self.modal.App(settings.app_name)
        with self.modal.enable_output(), app.run():
            yield app

    def image(self, settings: ModalSettings, project: Path) -> Any:
        return build_image(self.modal, settings, project)

    def create_sandbox(self, app: Any, image: Any, gpu: str | None, settings: ModalSettings,
                       tags: dict[str, str], env: dict[str, str]) -> Any:
        return self.modal.Sandbox.create("sleep", "infinity", **sandbox_options(
            self.modal, app, image, gpu, settings, tags, env))

    def exec(self, sandbox: Any, argv: list[str], env: dict[str, str]) -> ProcessHandle:
        return _SdkProcess(sandbox.exec(*argv, env=env, workdir=PROJECT_DIR, pty=True))

    def read_text(self, sandbox: Any, path: str) -> str:
        process = sandbox.exec("cat", path)
        text = process.stdout.read()
        process.wait()
        return str(text)

    def terminate(self, sandbox: Any) -> None:
        sandbox.terminate()

    def sandboxes_tagged(self, tags: dict[str, str]) -> list[Any]:
        return list(self.modal.Sandbox.list(tags=tags))

    def tags_of(self, sandbox: Any) -> dict[str, str]:
        return dict(sandbox.get_tags())


class _SdkProcess:
    def __init__(self, process: Any) -> None:
        self._process = process

    def lines(self) -> Iterator[str]:
        for chunk in self._process.stdout:  # with a pty, stdout and stderr arrive as one stream, in order
            yield from str(chunk).splitlines()

    def wait(self) -> int:
        return int(self._process.wait())


def build_image(modal: Any, settings: ModalSettings, project: Path) -> Any:
    """The suite's requirements, pytest-gpubench's own source and the project folder, read at startup."""
    return (
        modal.Image.debian_slim(python_version=settings.python)
        .apt_install("git")
        .pip_install(*settings.requirements)
        .env({"PYTHONUNBUFFERED": "1", "HF_HOME": f"{MODELS_DIR}/hf", "GPUBENCH_ENV_DIR": f"{MODELS_DIR}/envs"})
        .add_local_python_source("pytest_gpubench")
        .add_local_dir(project, remote_path=PROJECT_DIR, ignore=IGNORED)
    )


def sandbox_options(modal: Any, app: Any, image: Any, gpu: str | None, settings: ModalSettings,
                    tags: dict[str, str], env: dict[str, str]) -> dict[str, Any]:
    secrets = [modal.Secret.from_name(name) for name in settings.secrets]
    if settings.hf_secret:
        secrets.append(modal.Secret.from_name(settings.hf_secret))
    return dict(
        app=app, image=image, gpu=gpu, timeout=settings.timeout_s, workdir=PROJECT_DIR, tags=tags, env=env,
        secrets=secrets, volumes={MODELS_DIR: modal.Volume.from_name(settings.volume, create_if_missing=True)},
    )


# --- the executor -------------------------------------------------------------------------------


@dataclass
class _Pool:
    """Sandboxes by GPU string, each used by one cell at a time."""

    idle: dict[str | None, list[Any]] = field(default_factory=dict)
    all: list[Any] = field(default_factory=list)


class ModalExecutor:
    name = "modal"

    def __init__(self, config: pytest.Config, settings: ModalSettings, driver: ModalDriver, run_id: str) -> None:
        self.config = config
        self.settings = settings
        self.driver = driver
        self.run_id = run_id
        self.tags = {OWNER_TAG: f"{getpass.getuser()}@{socket.gethostname()}", RUN_TAG: run_id}
        self.ledger = Ledger(Path(os.environ.get("GPUBENCH_LEDGER_DIR") or Path(config.rootpath) / "gpubench-logs")
                             / f"modal-spend-{run_id}.txt")
        self._stack = ExitStack()
        self._app: Any = None
        self._image: Any = None
        self._pool = _Pool()
        self._lock = threading.Lock()
        self._closed = False

    def unmet_reason(self, target: Target) -> str | None:
        if target.gpu_type is not None and target.gpu_type.name not in MODAL_GPU_TYPES:
            return f"Modal has no {target.gpu_type.name} GPUs"
        return None

    # -- lifecycle -----------------------------------------------------------------------------

    def sweep_leftovers(self) -> list[str]:
        """Terminate sandboxes an earlier run of this user on this host left running (it was killed)."""
        swept = []
        for sandbox in self.driver.sandboxes_tagged({OWNER_TAG: self.tags[OWNER_TAG]}):
            if self.driver.tags_of(sandbox).get(RUN_TAG) != self.run_id:
                self.driver.terminate(sandbox)
                swept.append(str(getattr(sandbox, "object_id", sandbox)))
        return swept

    def _ensure_app(self) -> None:
        if self._app is None:
            self._app = self._stack.enter_context(self.driver.running_app(self.settings))
            self._image = self.driver.image(self.settings, Path(self.config.rootpath))

    @contextmanager
    def _sandbox(self, gpu: str | None) -> Iterator[Any]:
        with self._lock:
            self._ensure_app()
            idle = self._pool.idle.setdefault(gpu, [])
            sandbox = idle.pop() if idle else None
            if sandbox is None:
                env = {"GPUBENCH_RUN_ID": self.run_id}
                sandbox = self.driver.create_sandbox(self._app, self._image, gpu, self.settings, self.tags, env)
                self._pool.all.append(sandbox)
        healthy = False
        try:
            yield sandbox
            healthy = True
        finally:
            with self._lock:
                if healthy and self.settings.keep_warm and not self._closed:
                    self._pool.idle[gpu].append(sandbox)
                else:
                    self._terminate(sandbox)

    def _terminate(self, sandbox: Any) -> None:
        try:
            self.driver.terminate(sandbox)
        except Exception:  # noqa: BLE001 - already gone; the app's end stops it regardless
            pass
        if sandbox in self._pool.all:
            self._pool.all.remove(sandbox)

    def close(self) -> None:
        """Every sandbox of this process terminated, the ephemeral app stopped."""
        with self._lock:
            self._closed = True
            for sandbox in list(self._pool.all):
                self._terminate(sandbox)
            self._pool.idle.clear()
        self._stack.close()

    # -- a cell ----------------------------------------------------------------------------------

    def run(self, item: pytest.Item, nextitem: pytest.Item | None, rounds: int) -> list[pytest.TestReport]:
        target: Target = item.callspec.params["gpubench_target"]  # type: ignore[attr-defined]
        spent = self.ledger.spent()
        if self.settings.budget_usd is not None and spent >= self.settings.budget_usd:
            return failure_reports(item, "setup", f"[budget-spent] this run has spent ${spent:.2f} of its "
                                   f"${self.settings.budget_usd:.2f} budget; no new cell starts")
        gpu = modal_gpu(target)
        refusal = memory_refusal(model, target) if (model := model_of(item)) else None
        if refusal is not None:  # before any GPU starts
            return failure_reports(item, "setup", refusal)
        last_error: BaseException | None = None
        retryable: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError, *_infra_errors())
        for attempt in range(1 + INFRA_RETRIES):
            try:
                return self._run_once(item, target, gpu, rounds)
            except retryable as error:
                last_error = error  # a lost container or a preemption: the cell itself never ran to a verdict
                time.sleep(min(30.0, 2.0 * 2**attempt))
        return failure_reports(item, "setup", f"[modal-infrastructure] {gpu}: {last_error!r} after "
                               f"{1 + INFRA_RETRIES} attempts")

    def _run_once(self, item: pytest.Item, target: Target, gpu: str, rounds: int) -> list[pytest.TestReport]:
        from ..heartbeat import Heartbeat

        log_dir = log_dir_for(self.config, item.nodeid)
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / "runner.log"
        out = f"{OUT_DIR}/{abs(hash(item.nodeid))}-{time.time_ns()}.jsonl"
        inifile = None
        if self.config.inipath is not None:
            inifile = str(PurePosixPath(PROJECT_DIR) / Path(self.config.inipath).relative_to(self.config.rootpath))
        argv = runner_argv(self.config, "python", out, item.nodeid, rounds, rootdir=PROJECT_DIR, inifile=inifile)
        beat = Heartbeat(self.config, item.nodeid, f"on Modal ({gpu})")
        with self._sandbox(gpu) as sandbox, open(log_path, "w", encoding="utf-8") as log:
            started = time.monotonic()
            log.write(f"$ {' '.join(argv)}   (Modal sandbox {getattr(sandbox, 'object_id', '?')}, gpu={gpu})\n")
            process = self.driver.exec(sandbox, ["mkdir", "-p", OUT_DIR], {})
            process.wait()
            process = self.driver.exec(sandbox, argv, {"GPUBENCH_RUN_ID": self.run_id})
            try:
                for line in process.lines():
                    log.write(line + "\n")
                    log.flush()
                    beat.beat(f"last line: {line[:160]}")
                exit_code = process.wait()
            finally:
                beat.close()
            elapsed = time.monotonic() - started
            lines = self.driver.read_text(sandbox, out).splitlines()
        gpu_seconds = elapsed * target.count
        usd = elapsed * (target.price_per_hour or 0.0) / 3600
        self.ledger.add(usd)
        reports = reports_from_runner(self.config, item, lines, log_path, exit_code, f"Modal {gpu}")
        for report in reports:
            record = record_of(report) if report.when == "call" else None
            if record is not None:
                record = record.with_details(modal={"gpu": gpu, "gpu_seconds": gpu_seconds, "cost_usd": usd, "run": self.run_id,
                                                    "sandbox": str(getattr(sandbox, "object_id", ""))})
                attach(report, replace(record, phases_s={**record.phases_s, "modal_s": elapsed}))
        return reports


def _infra_errors() -> tuple[type[BaseException], ...]:
    try:
        from modal.exception import ConnectionError as ModalConnectionError
        from modal.exception import SandboxTerminatedError, SandboxTimeoutError
    except ImportError:
        return ()
    return (ModalConnectionError, SandboxTerminatedError, SandboxTimeoutError)


# --- weights --------------------------------------------------------------------------------------

DOWNLOAD = ("import sys; from huggingface_hub import snapshot_download; "
            "print(snapshot_download(sys.argv[1]), flush=True)")
GATED_SIGNS = ("401", "403", "gated", "restricted", "token", "access to model")


def prefetch_weights(executor: ModalExecutor, models: Iterable[str]) -> list[str]:
    """Download each model into the Volume from a CPU sandbox before any GPU starts. Returns one refusal
    line per model that cannot be had (gated with no token, not found), naming the fix."""
    refusals: list[str] = []
    wanted = sorted(set(models))
    if not wanted:
        return refusals
    with executor._sandbox(None) as sandbox:  # noqa: SLF001 - the executor's own pool, no GPU
        for model in wanted:
            process = executor.driver.exec(sandbox, ["python", "-c", DOWNLOAD, model], {})
            output = list(process.lines())
            if process.wait() == 0:
                continue
            tail = " / ".join(line.strip() for line in output[-3:])
            if any(sign in tail.lower() for sign in GATED_SIGNS):
                secret = executor.settings.hf_secret
                fix = (f"the Modal secret {secret!r} holds no token with access: recreate it with "
                       f"`modal secret create {secret} HF_TOKEN=hf_...` after accepting the model's terms"
                       if secret else "create a secret with `modal secret create huggingface-secret HF_TOKEN=hf_...` "
                       "and add hf_secret = \"huggingface-secret\" to [tool.gpubench.modal]")
                refusals.append(f"[gated-model-or-token] {model}: {tail}; {fix}")
            else:
                refusals.append(f"[model-not-found] {model}: {tail}")
    return refusals


# --- the pytest plugin ------------------------------------------------------------------------------

EXECUTOR_KEY = pytest.StashKey["ModalExecutor | None"]()
SETTINGS_KEY = pytest.StashKey[ModalSettings]()


class DriverHookspecs:
    @pytest.hookspec(firstresult=True)
    def pytest_gpubench_modal_driver(self, config: pytest.Config) -> ModalDriver | None:
        """Return the adapter --modal talks to Modal through (tests return a stand-in); default: the SDK's."""


@pytest.hookimpl
def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(DriverHookspecs)


@pytest.hookimpl
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gpubench")
    group.addoption("--modal", dest="gpubench_modal", action="store_true", default=False,
                    help="Run each GPU cell in a Modal container with that GPU ([tool.gpubench.modal] configures it).")
    group.addoption("--gpubench-budget", dest="gpubench_budget", metavar="USD", default=None,
                    help="With --modal: refuse a run whose estimated cost exceeds this, and start no new cell once "
                    "the GPU spend reaches it.")


@pytest.hookimpl(trylast=True)  # after the session: it has checked the targets
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MODEL_MARKER}(name, params_b=None, dtype='bf16'): the model a cell serves; "
                            "--modal checks it fits the target and downloads its weights before any GPU starts")
    config.stash[EXECUTOR_KEY] = None
    if not config.getoption("gpubench_modal"):
        return
    from ..options import find_config_file, read_config_table
    from ..session import get_session

    path = find_config_file(config)
    config.stash[SETTINGS_KEY] = load_modal_settings(config, read_config_table(path), f"{path} [tool.gpubench]")
    driver = config.hook.pytest_gpubench_modal_driver(config=config)
    if driver is None:
        check_credentials()
        driver = SdkDriver()
    session = get_session(config)
    check_gpu_types(session.targets)
    config.stash[EXECUTOR_KEY] = ModalExecutor(config, config.stash[SETTINGS_KEY], driver, session.run_id)


@pytest.hookimpl
def pytest_gpubench_make_executor(config: pytest.Config, choice: Any) -> ModalExecutor | None:
    executor = config.stash.get(EXECUTOR_KEY, None)
    return executor if executor is not None and not choice.target.is_cpu else None


def _modal_cells(session: pytest.Session) -> list[pytest.Item]:
    from ..matrix import TARGET_PARAM

    out = []
    for item in session.items:
        target = getattr(getattr(item, "callspec", None), "params", {}).get(TARGET_PARAM)
        if isinstance(target, Target) and not target.is_cpu and item.get_closest_marker("skip") is None:
            out.append(item)
    return out


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> Iterator[None]:
    """Pre-flight, once the cells are known and before any of them runs: cost against the budget, leftovers
    of killed runs swept, weights in the Volume."""
    executor = session.config.stash.get(EXECUTOR_KEY, None)
    if executor is not None and not session.config.option.collectonly:
        cells = _modal_cells(session)
        targets = [item.callspec.params["gpubench_target"] for item in cells]  # type: ignore[attr-defined]
        estimate = estimate_usd(targets, executor.settings.expected_cell_s)
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        budget = executor.settings.budget_usd
        line = (f"gpubench: Modal: {len(cells)} GPU cell(s), estimated ${estimate:.2f} at "
                f"{executor.settings.expected_cell_s:g} s a cell" + (f"; budget ${budget:.2f}" if budget else ""))
        if budget is not None and estimate > budget:
            raise pytest.UsageError(f"{line}: over budget; raise --gpubench-budget, select fewer cells (-k), or "
                                    "lower modal.expected_cell_s if cells are shorter")
        if reporter is not None:
            reporter.write_line(line)
        for swept in executor.sweep_leftovers():
            if reporter is not None:
                reporter.write_line(f"gpubench: Modal: terminated sandbox {swept}, left running by an earlier run")
        worker = getattr(session.config, "workerinput", {}).get("workerid")
        if worker in (None, "gw0"):
            refusals = prefetch_weights(executor, [m.name for item in cells if (m := model_of(item))])
            if refusals:
                raise pytest.UsageError("\n".join(refusals))
    try:
        return (yield)
    finally:
        if executor is not None:
            executor.close()


@pytest.hookimpl
def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    executor = config.stash.get(EXECUTOR_KEY, None)
    if executor is not None and executor.ledger.path.exists():
        terminalreporter.write_line(f"gpubench: Modal: ${executor.ledger.spent():.2f} spent on GPUs this run "
                                    f"(ledger {executor.ledger.path})")
