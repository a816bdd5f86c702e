"""Environments for variants that bring their own code: one virtual environment per recipe, built once,
cached by a hash of the recipe, reused across cells and runs, rebuilt when the recipe changes.

A recipe says how to get the code: a source (a git repository at a ref, or a local folder), optionally a
patch applied on top, and pip requirement strings (a version, a wheel path, a ``git+`` URL, a local path).
A patch with no source applies to the environment's site-packages after the requirements are in: that is
how a candidate patch is laid on a released wheel.

Layered (the default): the environment sees the packages of the interpreter running pytest (torch, jax,
pytest and pytest-gpubench itself, large and fixed on a GPU host) after its own, and installs only what
differs; a package it installs shadows the base's copy. Isolated (``isolated = true``): nothing from the
base; pytest, pytest-benchmark and pytest-gpubench are installed into it as well.

Concurrency: a build holds an exclusive lock on its environment, so xdist workers that need one
environment build it once and the others wait, then reuse it. A failed build is remembered for the rest
of the run (every cell of the variant fails with its log at once) and tried again by the next run.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ENV_DIR_ENV = "GPUBENCH_ENV_DIR"
RUN_ID_ENV = "GPUBENCH_RUN_ID"
FORMAT = 1  # bump when the layout of a built environment changes: every environment is rebuilt
READY_FILE = "gpubench-env.json"
FAILED_FILE = "gpubench-env-failed.json"
BUILD_LOG = "build.log"


class EnvBuildError(RuntimeError):
    """A build step failed. ``str()`` is one line (step, command, exit status, log path); ``output`` is
    what the failing step printed and ``log_path`` the whole build's log."""

    def __init__(self, step: str, detail: str, output: str, log_path: Path) -> None:
        super().__init__(f"[env-build-failed] step '{step}' failed: {detail}; full build log: {log_path}")
        self.step = step
        self.detail = detail
        self.output = output
        self.log_path = log_path


@dataclass(frozen=True)
class Source:
    """Where a variant's own code comes from: a git repository (URL or path) at ``ref``, or a folder."""

    git: str | None = None
    ref: str | None = None
    path: str | None = None
    subdirectory: str | None = None

    def describe(self) -> str:
        where = f"{self.git}@{self.ref}" if self.git else str(self.path)
        return where + (f"#{self.subdirectory}" if self.subdirectory else "")


@dataclass(frozen=True)
class EnvRecipe:
    source: Source | None = None
    requirements: tuple[str, ...] = ()
    patch: str | None = None  # an absolute path, resolved against the config file when it was read
    isolated: bool = False

    def describe(self) -> str:
        parts = []
        if self.source:
            parts.append(self.source.describe())
        parts += list(self.requirements)
        if self.patch:
            parts.append(f"+ {Path(self.patch).name}")
        return " ".join(parts) + (" (isolated)" if self.isolated else "")


def default_env_dir() -> Path:
    if os.environ.get(ENV_DIR_ENV):
        return Path(os.environ[ENV_DIR_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "pytest-gpubench" / "envs"


@dataclass(frozen=True)
class Environment:
    """A built environment: its interpreter, and what went into it."""

    key: str
    root: Path
    recipe: EnvRecipe
    resolved_ref: str | None
    built_now: bool
    build_s: float

    @property
    def python(self) -> Path:
        return self.root / "venv" / "bin" / "python"


def _base_site_dirs() -> list[str]:
    """The site-packages of the interpreter running pytest, in its own order: what a layered
    environment adds after its own."""
    dirs = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    dirs += [p for p in sys.path if p.rstrip("/").endswith(("site-packages", "dist-packages"))]
    seen: list[str] = []
    for d in dirs:
        if d and Path(d).is_dir() and d not in seen:
            seen.append(d)
    return seen


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _folder_fingerprint(folder: Path) -> str:
    """Names, sizes and modification times of a local source's files: cheap, and changes when they do."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if ".git" in path.parts or "__pycache__" in path.parts or not path.is_file():
            continue
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class EnvironmentCache:
    """Builds and finds environments under ``root``; ``log`` receives progress lines (the heartbeat)."""

    def __init__(self, root: Path, base_python: str = sys.executable, run_id: str | None = None,
                 rebuild: bool = False) -> None:
        self.root = root
        self.base_python = base_python
        self.run_id = run_id or os.environ.get(RUN_ID_ENV) or ""
        self.rebuild = rebuild
        self._rebuilt: set[str] = set()

    # -- keys ------------------------------------------------------------------------------------

    def _mirror_of(self, url: str) -> Path:
        return self.root / "git" / hashlib.sha256(url.encode()).hexdigest()[:16]

    def resolve_ref(self, source: Source, log: Callable[[str], None]) -> str:
        """The commit ``source.ref`` names now (branches move), fetched into a shared mirror."""
        assert source.git is not None
        mirror = self._mirror_of(source.git)
        mirror.parent.mkdir(parents=True, exist_ok=True)
        with _locked(mirror.with_suffix(".lock")):
            if not (mirror / "HEAD").exists():
                _run_step("fetch source", ["git", "clone", "--quiet", "--mirror", source.git, str(mirror)], log)
            else:
                _run_step("fetch source", ["git", "-C", str(mirror), "fetch", "--quiet", "--prune", "origin"], log)
        ref = source.ref or "HEAD"
        out = _run_step("resolve ref", ["git", "-C", str(mirror), "rev-parse", "--verify", "--end-of-options",
                                        f"{ref}^{{commit}}"], log)
        return out.strip().splitlines()[-1]

    def key_of(self, recipe: EnvRecipe, resolved_ref: str | None, config_dir: Path | None = None) -> str:
        source: dict[str, Any] | None = None
        if recipe.source is not None:
            source = {**asdict(recipe.source), "ref": resolved_ref}
            if recipe.source.path:
                folder = Path(recipe.source.path)
                source["fingerprint"] = _folder_fingerprint(folder) if folder.is_dir() else "missing"
        identity = {
            "format": FORMAT,
            "python": [os.path.realpath(self.base_python), sys.version],
            "layered_on": None if recipe.isolated else _base_site_dirs(),
            "source": source,
            "requirements": list(recipe.requirements),
            "patch": _file_sha256(Path(recipe.patch)) if recipe.patch and Path(recipe.patch).is_file() else recipe.patch,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]

    # -- building --------------------------------------------------------------------------------

    def get(self, recipe: EnvRecipe, log: Callable[[str], None] = lambda line: None) -> Environment:
        """The environment for ``recipe``, built now if no earlier run built it. Raises EnvBuildError."""
        self.root.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        resolved = None
        if recipe.source is not None and recipe.source.git:
            try:
                resolved = self.resolve_ref(recipe.source, log)
            except EnvBuildError as error:  # nothing built yet: say which source and ref
                raise EnvBuildError(error.step, f"{recipe.source.describe()}: {error.output.strip()[-500:]}",
                                    error.output, error.log_path) from None
        key = self.key_of(recipe, resolved)
        env_root = self.root / key
        with _locked(self.root / f"{key}.lock"):
            failed = env_root / FAILED_FILE
            if failed.exists():
                memo = json.loads(failed.read_text())
                if memo.get("run_id") == self.run_id and self.run_id:
                    raise EnvBuildError(memo["step"], memo["detail"] + " (earlier in this run)", memo["output"],
                                        Path(memo["log_path"]))
            ready = (env_root / READY_FILE).exists()
            if ready and not (self.rebuild and key not in self._rebuilt):
                return Environment(key, env_root, recipe, resolved, False, time.monotonic() - started)
            self._build(recipe, resolved, env_root, log)
            self._rebuilt.add(key)
        return Environment(key, env_root, recipe, resolved, True, time.monotonic() - started)

    def _build(self, recipe: EnvRecipe, resolved: str | None, env_root: Path, log: Callable[[str], None]) -> None:
        if env_root.exists():
            shutil.rmtree(env_root)
        env_root.mkdir(parents=True)
        log_path = env_root / BUILD_LOG
        with open(log_path, "w", encoding="utf-8") as log_file:

            def step(name: str, argv: Sequence[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
                log(f"{name}: {shlex.join(argv)}")
                log_file.write(f"$ {shlex.join(argv)}{f'   (in {cwd})' if cwd else ''}\n")
                log_file.flush()
                try:
                    return _run_step(name, argv, log, cwd=cwd, env=env, log_file=log_file, log_path=log_path)
                except EnvBuildError as error:
                    (env_root / FAILED_FILE).write_text(json.dumps({
                        "run_id": self.run_id, "step": error.step, "detail": error.detail,
                        "output": error.output, "log_path": str(log_path),
                    }))
                    raise

            venv = env_root / "venv"
            step("create venv", [self.base_python, "-m", "venv", "--without-pip", str(venv)])
            env_python = venv / "bin" / "python"
            site_packages = Path(step("find site-packages", [str(env_python), "-c",
                                      "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
            if not recipe.isolated:
                # addsitedir, not a bare path: the base's own .pth files (editable installs) must run too
                lines = [f"import site; site.addsitedir({d!r})" for d in _base_site_dirs()]
                (site_packages / "_gpubench_layered_on_base.pth").write_text("\n".join(lines) + "\n")
                log_file.write(f"layered on: {', '.join(_base_site_dirs())}\n")
            pip = [self.base_python, "-m", "pip", "--python", str(env_python), "install", "--no-input",
                   "--disable-pip-version-check"]
            if not recipe.isolated and _has_build_backend(env_python):
                pip.append("--no-build-isolation")  # the base's build backends: fast, and works offline
            elif not recipe.isolated:
                # Python 3.12+ venvs carry no setuptools, 3.10's has no bdist_wheel: pip builds in isolation,
                # which fetches the backend from the package index (or pip's cache)
                log_file.write("the base interpreter has no setuptools with bdist_wheel: building in isolation\n")
            if recipe.isolated:
                step("install pytest-gpubench", [*pip, *_gpubench_requirements()])
            if recipe.source is not None:
                source_dir = env_root / "src"
                if recipe.source.git:
                    mirror = self._mirror_of(recipe.source.git)
                    step("check out", ["git", "clone", "--quiet", "--shared", "--no-checkout", str(mirror), str(source_dir)])
                    step("check out", ["git", "-C", str(source_dir), "checkout", "--quiet", "--detach", str(resolved)])
                else:
                    shutil.copytree(str(recipe.source.path), source_dir, ignore=shutil.ignore_patterns("__pycache__"))
                    log_file.write(f"copied {recipe.source.path} -> {source_dir}\n")
                if recipe.patch:
                    step("apply patch", ["git", "apply", "--verbose", recipe.patch], cwd=source_dir,
                         env=_outside_any_repo(source_dir))
                target = source_dir / recipe.source.subdirectory if recipe.source.subdirectory else source_dir
                step("install source", [*pip, str(target)])
            if recipe.requirements:
                step("install requirements", [*pip, *recipe.requirements])
            if recipe.patch and recipe.source is None:
                step("apply patch", ["git", "apply", "--verbose", recipe.patch], cwd=site_packages,
                     env=_outside_any_repo(site_packages))
            (env_root / READY_FILE).write_text(json.dumps({
                "recipe": asdict(recipe), "resolved_ref": resolved, "base_python": self.base_python,
                "built_at": time.time(),
            }, indent=2))
            log_file.write("ready\n")


def _has_build_backend(python: Path) -> bool:
    """Whether ``python`` (a layered environment, seeing the base's packages) can build a setuptools project
    without fetching anything: setuptools with its bdist_wheel command."""
    probe = ("import setuptools, importlib.util as u; "  # bdist_wheel lives in setuptools from 70.1, before in wheel
             "raise SystemExit(u.find_spec('setuptools.command.bdist_wheel') is None and u.find_spec('wheel') is None)")
    return subprocess.run([str(python), "-c", probe], capture_output=True).returncode == 0


def _outside_any_repo(folder: Path) -> dict[str, str]:
    """git apply inside a folder that lies within some repository applies paths relative to that
    repository's top; stopping discovery at the folder makes it apply relative to the folder."""
    return {**os.environ, "GIT_CEILING_DIRECTORIES": str(folder.parent)}


def _gpubench_requirements() -> list[str]:
    """What an isolated environment needs to run a cell: this pytest-gpubench (its source tree when it is
    installed from one, so both sides read the same record version) and its dependencies."""
    from importlib import metadata

    package_dir = Path(__file__).resolve().parent
    project = package_dir.parent
    if (project / "pyproject.toml").is_file() and 'name = "pytest-gpubench"' in (project / "pyproject.toml").read_text():
        return [str(project)]
    return [f"pytest-gpubench=={metadata.version('pytest-gpubench')}"]


def _run_step(step: str, argv: Sequence[str], log: Callable[[str], None], cwd: Path | None = None,
              env: dict[str, str] | None = None, log_file: Any = None, log_path: Path | None = None) -> str:
    try:
        completed = subprocess.run(list(argv), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, errors="replace", stdin=subprocess.DEVNULL)
    except OSError as error:  # the tool itself is missing
        if log_file is not None:
            log_file.write(f"{error}\n")
        raise EnvBuildError(step, f"{shlex.join(argv)}: {error}", str(error), log_path or Path("(no log)")) from None
    if log_file is not None:
        log_file.write(completed.stdout)
        log_file.flush()
    last = completed.stdout.strip().splitlines()[-1:] or [""]
    if last[0]:
        log(f"{step}: {last[0][:200]}")
    if completed.returncode != 0:
        raise EnvBuildError(step, f"`{shlex.join(argv)}` exited with {completed.returncode}",
                            completed.stdout, log_path or Path("(no log)"))
    return completed.stdout


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
