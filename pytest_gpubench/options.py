"""Command-line options, the ``[tool.gpubench]`` table, and their validation into one frozen Settings.

The command line overrides the config table. Every bad value becomes a ``pytest.UsageError`` (exit 4)
whose one line says what was wrong and what to write instead.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .gate import GatePolicy
from .hardware import Catalog, GpuRequest, GpuSpecError, parse_gpu_option
from .environments import EnvRecipe, Source
from .matrix import Commit, Matrix, Variant
from .measure.sampler import SamplingPolicy

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

CACHE_MODES = ("cold", "hot")
CONFIG_KEYS = ("gpu", "max_time", "min_time", "min_samples", "stdrel", "warmup", "cache", "gate", "gate_alpha",
               "summary", "prices", "variants", "commits", "source", "matrix", "rounds", "interleave", "env_dir",
               "lock_timeout", "modal", "gate_runs", "report")
MATRIX_KEYS = ("variants", "commits", "source")  # what a matrix file may hold
VARIANT_KEYS = ("env", "git", "ref", "path", "subdirectory", "requirements", "patch", "isolated", "baseline")


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("gpubench", "GPU benchmarks (pytest-gpubench)")
    group.addoption(
        "--gpu", action="append", dest="gpubench_gpu", metavar="SPEC[,SPEC...]", default=None,
        help="GPU targets, each TYPE[:COUNT] (H100:8, A100-80GB, L4), 'local' (this host's GPUs; the default) "
        "or 'cpu'. Every benchmark runs once per target.",
    )
    group.addoption("--gpubench-max-time", dest="gpubench_max_time", metavar="SECONDS", default=None,
                    help="Stop sampling a cell after this long (default 3).")
    group.addoption("--gpubench-min-time", dest="gpubench_min_time", metavar="SECONDS", default=None,
                    help="Measure at least this much sample time before the noise rule may stop (default 0.5).")
    group.addoption("--gpubench-min-samples", dest="gpubench_min_samples", metavar="N", default=None,
                    help="Take at least N samples before the noise rule may stop (default 10).")
    group.addoption("--gpubench-stdrel", dest="gpubench_stdrel", metavar="FRACTION", default=None,
                    help="Stop once the median's relative standard error is under this, e.g. 0.005 or 0.5%% (default 0.5%%).")
    group.addoption("--gpubench-warmup", dest="gpubench_warmup", metavar="SECONDS", default=None,
                    help="Warm up for exactly this long before sampling (default: until the figure is steady, at most 1 s on a "
                    "GPU and 0.1 s on the CPU).")
    group.addoption("--gpubench-gate", dest="gpubench_gate", metavar="THRESHOLD", default=None,
                    help="With --benchmark-compare: fail a cell whose median is slower than the baseline's by more "
                    "than THRESHOLD (e.g. 5%% or 2.5%%) AND whose raw samples differ significantly (Mann-Whitney U).")
    group.addoption("--gpubench-gate-alpha", dest="gpubench_gate_alpha", metavar="P", default=None,
                    help="Significance level of the gate's test (default 0.01).")
    group.addoption("--gpubench-gate-runs", dest="gpubench_gate_runs", metavar="N", default=None,
                    help="Judge each cell against the newest N saved runs of this machine, not only the newest: a "
                    "regression must be slower than every one of them (default 3).")
    group.addoption("--gpubench-summary", dest="gpubench_summary", metavar="PATH", default=None,
                    help="Where the gate's markdown summary goes (default: $GITHUB_STEP_SUMMARY when set, "
                    "else gpubench-summary.md in the rootdir).")
    group.addoption("--gpubench-cache", dest="gpubench_cache", metavar="cold|hot", default=None,
                    help="cold: overwrite the caches (L2 on a GPU) before every sample; hot: back-to-back. "
                    "Default: cold on GPUs, hot on the CPU.")
    group.addoption("--gpubench-commit", action="append", dest="gpubench_commit", metavar="NAME[,NAME...]",
                    default=None, help="Run only these of the declared commits.")
    group.addoption("--gpubench-variant", action="append", dest="gpubench_variant", metavar="NAME[,NAME...]",
                    default=None, help="Run only these variants (with commits: of every selected commit).")
    group.addoption("--gpubench-rounds", dest="gpubench_rounds", metavar="N", default=None,
                    help="Measure each cell in N rounds, each set up and warmed up anew; results and "
                    "speed-up intervals rest on the spread between rounds (default 1).")
    group.addoption("--gpubench-interleave", dest="gpubench_interleave", action="store_const", const=True,
                    default=None, help="Run the rounds of a comparison's variants interleaved (A B B A A B...), "
                    "so drift during the run cancels out of their ratio. Under -n, add --dist loadgroup.")
    group.addoption("--gpubench-env-dir", dest="gpubench_env_dir", metavar="PATH", default=None,
                    help="Where variant environments are built and cached (default $GPUBENCH_ENV_DIR, else "
                    "~/.cache/pytest-gpubench/envs).")
    group.addoption("--gpubench-rebuild-envs", dest="gpubench_rebuild_envs", action="store_true", default=False,
                    help="Rebuild every variant environment this run uses, even when the cache has it.")
    group.addoption("--gpubench-report", dest="gpubench_report", metavar="DIR|no", default=None,
                    help="Write the report folder (index.html, report.md, results.csv, plots) here after the run "
                    "(default: gpubench-report in the rootdir); 'no' writes none.")
    group.addoption("--gpubench-lock-timeout", dest="gpubench_lock_timeout", metavar="SECONDS", default=None,
                    help="Fail a cell that waits longer than this for GPUs another process holds (default: wait).")


def parse_seconds(text: object, what: str) -> float:
    try:
        value = float(str(text).strip().removesuffix("s"))
    except ValueError:
        value = -1.0
    if not value > 0 or value != value or value == float("inf"):
        raise pytest.UsageError(f"{what}: {text!r} is not a duration; write seconds greater than 0, e.g. 2.5")
    return value


def parse_positive_int(text: object, what: str) -> int:
    if isinstance(text, bool) or not re.fullmatch(r"\s*[0-9]+\s*", str(text)) or int(str(text)) < 1:
        raise pytest.UsageError(f"{what}: {text!r} is not a count; write a whole number of at least 1, e.g. 10")
    return int(str(text))


def parse_fraction(text: object, what: str) -> float:
    """'0.5%' -> 0.005, '0.005' -> 0.005; must lie in (0, 1)."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise pytest.UsageError(f"{what}: {text!r} is not a fraction; write e.g. 0.5% or 0.005")
    return value


REPORT_OFF = ("no", "off", "false", "none")


def parse_report_dir(value: object, what: str, base: Path, rootdir: Path) -> Path | None:
    """The report folder: a path (relative to ``base``: the invocation folder for the option, the config file's for
    the key), 'no' or false for none; by default gpubench-report in the rootdir."""
    if value is None or value is True:
        return rootdir / "gpubench-report"
    if value is False or (isinstance(value, str) and value.strip().lower() in REPORT_OFF):
        return None
    if not isinstance(value, str) or not value.strip():
        raise pytest.UsageError(f"{what}: {value!r} is not a folder; write a path such as gpubench-report, or no")
    return Path(_resolve_path(value.strip(), base))


def parse_cache(text: object, what: str) -> str:
    if text not in CACHE_MODES:
        raise pytest.UsageError(f"{what}: {text!r} is not a cache mode; write cold or hot")
    return str(text)


@dataclass(frozen=True)
class Settings:
    requests: tuple[GpuRequest, ...]
    policy: SamplingPolicy
    cache: str | None  # None: cold on GPUs, hot on the CPU
    catalog: Catalog
    matrix: Matrix = field(default_factory=Matrix)
    gate: GatePolicy | None = None
    summary_path: Path | None = None
    rounds: int = 1
    interleave: bool = False
    env_dir: Path | None = None  # None: environments.default_env_dir()
    rebuild_envs: bool = False
    lock_timeout_s: float | None = None
    report_dir: Path | None = None  # None: no report folder


def find_config_file(config: pytest.Config) -> Path | None:
    if config.inipath is not None and config.inipath.name == "pyproject.toml":
        return Path(config.inipath)
    candidate = Path(config.rootpath) / "pyproject.toml"
    return candidate if candidate.is_file() else None


def read_config_table(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise pytest.UsageError(f"{path}: cannot read it as TOML ({error})") from None
    table = document.get("tool", {}).get("gpubench", {})
    if not isinstance(table, dict):
        raise pytest.UsageError(f"{path}: [tool.gpubench] must be a table")
    unknown = sorted(set(table) - set(CONFIG_KEYS))
    if unknown:
        raise pytest.UsageError(
            f"{path}: unknown key {unknown[0]!r} in [tool.gpubench]; known keys: {', '.join(CONFIG_KEYS)}"
        )
    return table


def _parse_prices(raw: object, where: str, catalog: Catalog) -> Catalog:
    if not isinstance(raw, dict):
        raise pytest.UsageError(f"{where}: prices must be a table of TYPE = dollars per GPU-hour, e.g. H100 = 3.95")
    prices: dict[str, float] = {}
    for name, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise pytest.UsageError(f"{where}: prices.{name} = {value!r}; write dollars per GPU-hour, e.g. {name} = 3.95")
        prices[name] = float(value)
    try:
        return catalog.with_prices(prices)
    except GpuSpecError as error:
        raise pytest.UsageError(f"{where}: prices: {error}") from None


def _string_list(value: object, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise pytest.UsageError(f"{where} must be a list of strings, e.g. [\"mypkg==1.2\", \"./wheels/mypkg.whl\"]")
    return tuple(value)


def _resolve_path(text: str, base: Path) -> str:
    path = Path(text).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def _looks_like_path(text: str) -> bool:
    return text.startswith(("./", "../", "/", "~"))


def _parse_variant(name: str, body: object, where: str, base: Path, source: Mapping[str, Any]) -> Variant:
    """One variant table. ``source`` is the run's [source] table: a variant that names only a ref takes
    its repository from there."""
    at = f"{where} variants.{name}"
    if not isinstance(body, dict):
        raise pytest.UsageError(f"{at}: write a table, e.g. {name} = {{ ref = \"main\" }} or {{ env = {{ ATTN = \"flash\" }} }}")
    unknown = sorted(set(body) - set(VARIANT_KEYS))
    if unknown:
        raise pytest.UsageError(f"{at}: unknown key {unknown[0]!r}; known keys: {', '.join(VARIANT_KEYS)}")
    env = body.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise pytest.UsageError(f"{at}.env must map names to strings, e.g. env = {{ ATTN = \"flash\" }}")
    for key in ("git", "ref", "path", "subdirectory", "patch"):
        if key in body and not isinstance(body[key], str):
            raise pytest.UsageError(f"{at}.{key} must be a string")
    for key in ("isolated", "baseline"):
        if key in body and not isinstance(body[key], bool):
            raise pytest.UsageError(f"{at}.{key} must be true or false")
    requirements = tuple(
        _resolve_path(r, base) if _looks_like_path(r) else r
        for r in _string_list(body.get("requirements", []), f"{at}.requirements")
    )
    git = body.get("git") or (source.get("git") if "ref" in body and "path" not in body else None)
    if git and _looks_like_path(git):
        git = _resolve_path(git, base)
    path = body.get("path")
    if path and git:
        raise pytest.UsageError(f"{at}: give git (with ref) or path, not both")
    if "ref" in body and not git:
        raise pytest.UsageError(f"{at}: ref = {body['ref']!r} needs a repository; add git = \"<url or path>\" "
                                "here or in [tool.gpubench.source]")
    subdirectory = body.get("subdirectory") or source.get("subdirectory")
    code_source = None
    if git or path:
        code_source = Source(git=git, ref=body.get("ref") if git else None,
                             path=_resolve_path(path, base) if path else None,
                             subdirectory=subdirectory if isinstance(subdirectory, str) else None)
    patch = _resolve_path(body["patch"], base) if "patch" in body else None
    if patch and not Path(patch).is_file():
        raise pytest.UsageError(f"{at}.patch: {patch} does not exist")
    if patch and code_source is None and not requirements:
        raise pytest.UsageError(f"{at}: a patch needs code to apply to: add ref (with [tool.gpubench.source]), git, "
                                "path, or requirements")
    recipe = None
    if code_source or requirements or patch:
        recipe = EnvRecipe(code_source, requirements, patch, bool(body.get("isolated", False)))
    elif body.get("isolated"):
        raise pytest.UsageError(f"{at}: isolated = true needs code: add ref, git, path or requirements")
    return Variant(name, dict(env), recipe, bool(body.get("baseline", False)))


def _parse_variant_table(raw: object, where: str, base: Path, source: Mapping[str, Any]) -> dict[str, Variant]:
    if not isinstance(raw, dict):
        raise pytest.UsageError(f"{where}: variants must be a table, e.g. [tool.gpubench.variants.flash] env = {{ATTN = \"flash\"}}")
    variants = {name: _parse_variant(name, body or {}, where, base, source) for name, body in raw.items()}
    if sum(v.is_baseline for v in variants.values()) > 1:
        raise pytest.UsageError(f"{where}: more than one variant says baseline = true")
    return variants


def _parse_commits(raw: object, where: str, base: Path, source: Mapping[str, Any], catalog: Catalog) -> tuple[Commit, ...]:
    if not isinstance(raw, dict) or not raw:
        raise pytest.UsageError(f"{where}: commits must be a table of commits, e.g. [tool.gpubench.commits.8aa1485f.variants] "
                                "baseline = {{ ref = \"8aa1485f^\" }}")
    commits = []
    for name, body in raw.items():
        at = f"{where} commits.{name}"
        if not isinstance(body, dict) or set(body) - {"variants", "gpu"}:
            raise pytest.UsageError(f"{at}: a commit takes variants = {{...}} and optionally gpu = \"H100:2\"")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._]*", name):
            raise pytest.UsageError(f"{at}: {name!r} cannot be part of a test id; use letters, digits, '.' and '_'")
        variants = _parse_variant_table(body.get("variants"), at, base, source)
        if not variants:
            raise pytest.UsageError(f"{at}: declares no variants; add e.g. baseline = {{ ref = \"{name}^\" }}")
        targets: tuple[str, ...] = ()
        if "gpu" in body:
            specs = _string_list(body["gpu"], f"{at}.gpu")
            try:
                requests = parse_gpu_option(list(specs), catalog)
            except GpuSpecError as error:
                raise pytest.UsageError(f"{at}.gpu: {error}") from None
            targets = tuple(f"{r.gpu_type.name}:{r.count}" if r.gpu_type else r.text for r in requests)
        commits.append(Commit(name, tuple(variants.values()), targets))
    return tuple(commits)


def _select(names: list[str] | None, known: list[str], what: str, option: str) -> set[str] | None:
    if not names:
        return None
    chosen = {n.strip() for value in names for n in value.split(",") if n.strip()}
    unknown = sorted(chosen - set(known))
    if unknown or not chosen:
        raise pytest.UsageError(f"{option} {','.join(names)}: no {what} named {unknown[0] if unknown else '(empty)'!r}; "
                                f"declared: {', '.join(known) or 'none'}")
    return chosen


def load_matrix(config: pytest.Config, table: Mapping[str, Any], where: str, base: Path, catalog: Catalog) -> Matrix:
    """Variants and commits from [tool.gpubench] or the matrix file it names, narrowed by the selection options."""
    if "matrix" in table:
        if not isinstance(table["matrix"], str):
            raise pytest.UsageError(f"{where} matrix: write the path of a TOML file, e.g. matrix = \"bench_matrix.toml\"")
        path = Path(_resolve_path(table["matrix"], base))
        try:
            document = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise pytest.UsageError(f"{where} matrix: cannot read {path} as TOML ({error})") from None
        unknown = sorted(set(document) - set(MATRIX_KEYS))
        if unknown:
            raise pytest.UsageError(f"{path}: unknown key {unknown[0]!r}; a matrix file holds {', '.join(MATRIX_KEYS)}")
        clash = sorted(set(document) & set(table) - {"matrix"})
        if clash:
            raise pytest.UsageError(f"{where}: {clash[0]} is both here and in the matrix file {path}; keep one")
        table, where, base = {**table, **document}, str(path), path.parent
    source = table.get("source", {})
    if not isinstance(source, dict) or set(source) - {"git", "subdirectory"}:
        raise pytest.UsageError(f"{where} source: write a table with git = \"<url or path>\" and optionally subdirectory")
    variants = _parse_variant_table(table["variants"], where, base, source) if "variants" in table else {}
    commits = _parse_commits(table["commits"], where, base, source, catalog) if "commits" in table else ()
    if commits and variants:
        raise pytest.UsageError(f"{where}: with commits, declare variants per commit (commits.<name>.variants), "
                                "not in a variants table")
    wanted_commits = _select(config.getoption("gpubench_commit"), [c.name for c in commits], "commit", "--gpubench-commit")
    if wanted_commits is not None:
        commits = tuple(c for c in commits if c.name in wanted_commits)
    all_variant_names = list(dict.fromkeys([v.name for c in commits for v in c.variants] or list(variants)))
    wanted = _select(config.getoption("gpubench_variant"), all_variant_names, "variant", "--gpubench-variant")
    if wanted is not None:
        variants = {name: v for name, v in variants.items() if name in wanted}
        commits = tuple(Commit(c.name, tuple(v for v in c.variants if v.name in wanted), c.targets) for c in commits)
        commits = tuple(c for c in commits if c.variants)
    return Matrix(variants, commits)


def load_settings(config: pytest.Config) -> Settings:
    path = find_config_file(config)
    table = read_config_table(path)
    where = f"{path} [tool.gpubench]" if path else "[tool.gpubench]"

    def pick(option: str, key: str) -> tuple[object, str]:
        cli = config.getoption(option)
        if cli is not None:
            return cli, "--" + option.replace("_", "-")
        return table.get(key), f"{where} {key}"

    catalog = Catalog()
    if "prices" in table:
        catalog = _parse_prices(table["prices"], where, catalog)

    gpu_values = config.getoption("gpubench_gpu")
    gpu_origin = "--gpu"
    if gpu_values is None:
        configured = table.get("gpu", ["local"])
        gpu_values = [configured] if isinstance(configured, str) else configured
        gpu_origin = f"{where} gpu"
    if not isinstance(gpu_values, list) or not all(isinstance(v, str) for v in gpu_values):
        raise pytest.UsageError(f"{gpu_origin}: write a list of GPU specs, e.g. gpu = [\"H100:8\", \"cpu\"]")
    if not gpu_values:
        raise pytest.UsageError(f"{gpu_origin}: no GPU target given; write e.g. gpu = [\"local\"] or --gpu cpu")
    try:
        requests = parse_gpu_option(gpu_values, catalog)
    except GpuSpecError as error:
        raise pytest.UsageError(f"{gpu_origin} {','.join(gpu_values)}: {error}") from None

    defaults = SamplingPolicy()
    value, origin = pick("gpubench_max_time", "max_time")
    max_time = defaults.max_time_s if value is None else parse_seconds(value, origin)
    value, origin = pick("gpubench_min_time", "min_time")
    min_time = defaults.min_time_s if value is None else parse_seconds(value, origin)
    value, origin = pick("gpubench_warmup", "warmup")
    warmup = None if value is None else parse_seconds(value, origin)
    value, origin = pick("gpubench_min_samples", "min_samples")
    min_samples = defaults.min_samples if value is None else parse_positive_int(value, origin)
    value, origin = pick("gpubench_stdrel", "stdrel")
    stdrel = defaults.stdrel if value is None else parse_fraction(value, origin)
    value, origin = pick("gpubench_cache", "cache")
    cache = None if value is None else parse_cache(value, origin)

    matrix = load_matrix(config, table, where, path.parent if path else Path(config.rootpath), catalog)

    value, origin = pick("gpubench_gate", "gate")
    gate = None
    if value is not None:
        threshold = parse_fraction(value, origin)
        comparing = bool(config.getoption("benchmark_compare", None))
        if not comparing and origin == "--gpubench-gate":
            raise pytest.UsageError(f"{origin} needs a baseline; add --benchmark-compare (the newest saved run) "
                                    "or --benchmark-compare=NUM")
        # a gate in the config applies to the runs that compare, and leaves the others alone
        alpha_value, alpha_origin = pick("gpubench_gate_alpha", "gate_alpha")
        alpha = 0.01 if alpha_value is None else parse_fraction(alpha_value, alpha_origin)
        runs_value, runs_origin = pick("gpubench_gate_runs", "gate_runs")
        runs = 3 if runs_value is None else parse_positive_int(runs_value, runs_origin)
        gate = GatePolicy(threshold, alpha, runs) if comparing else None
    value, origin = pick("gpubench_summary", "summary")
    summary_path = None if value is None else Path(str(value))
    value, origin = pick("gpubench_rounds", "rounds")
    rounds = 1 if value is None else parse_positive_int(value, origin)
    value, origin = pick("gpubench_interleave", "interleave")
    if value is not None and not isinstance(value, bool):
        raise pytest.UsageError(f"{origin}: {value!r}; write true or false")
    interleave = bool(value)
    if interleave and rounds < 2:
        raise pytest.UsageError(f"{origin}: interleaving needs at least 2 rounds; add --gpubench-rounds=4 (or rounds = 4)")
    if interleave and getattr(config.option, "numprocesses", None) and getattr(config.option, "dist", "no") not in ("loadgroup", "no"):
        raise pytest.UsageError(f"{origin} under -n needs the variants of a comparison on one worker; add --dist loadgroup")
    value, origin = pick("gpubench_env_dir", "env_dir")
    env_dir = None if value is None else Path(_resolve_path(str(value), Path(config.rootpath)))
    value, origin = pick("gpubench_lock_timeout", "lock_timeout")
    lock_timeout = None if value is None else parse_seconds(value, origin)
    if min_time > max_time:
        raise pytest.UsageError(f"min_time {min_time:g} s is above max_time {max_time:g} s; raise max_time or lower min_time")
    policy = SamplingPolicy(warmup_s=warmup, max_time_s=max_time, min_time_s=min_time, min_samples=min_samples, stdrel=stdrel)
    value, origin = pick("gpubench_report", "report")
    report_dir = parse_report_dir(value, origin, Path(config.invocation_params.dir) if origin.startswith("--")
                                  else path.parent if path else Path(config.rootpath), Path(config.rootpath))
    return Settings(requests, policy, cache, catalog, matrix, gate, summary_path, rounds, interleave, env_dir,
                    bool(config.getoption("gpubench_rebuild_envs")), lock_timeout, report_dir=report_dir)
