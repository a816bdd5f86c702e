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
from .matrix import Variant
from .measure.sampler import SamplingPolicy

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

CACHE_MODES = ("cold", "hot")
CONFIG_KEYS = ("gpu", "max_time", "min_time", "min_samples", "stdrel", "warmup", "cache", "gate", "gate_alpha",
               "summary", "prices", "variants")


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
                    help="Warm up for at least this long before sampling (default 1 on a GPU, 0.1 on the CPU).")
    group.addoption("--gpubench-gate", dest="gpubench_gate", metavar="THRESHOLD", default=None,
                    help="With --benchmark-compare: fail a cell whose median is slower than the baseline's by more "
                    "than THRESHOLD (e.g. 5%% or 2.5%%) AND whose raw samples differ significantly (Mann-Whitney U).")
    group.addoption("--gpubench-gate-alpha", dest="gpubench_gate_alpha", metavar="P", default=None,
                    help="Significance level of the gate's test (default 0.01).")
    group.addoption("--gpubench-summary", dest="gpubench_summary", metavar="PATH", default=None,
                    help="Where the gate's markdown summary goes (default: $GITHUB_STEP_SUMMARY when set, "
                    "else gpubench-summary.md in the rootdir).")
    group.addoption("--gpubench-cache", dest="gpubench_cache", metavar="cold|hot", default=None,
                    help="cold: overwrite the caches (L2 on a GPU) before every sample; hot: back-to-back. "
                    "Default: cold on GPUs, hot on the CPU.")


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
    variants: Mapping[str, Variant] = field(default_factory=dict)
    config_path: Path | None = None
    gate: GatePolicy | None = None
    summary_path: Path | None = None


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


def _parse_variants(raw: object, where: str) -> dict[str, Variant]:
    if not isinstance(raw, dict):
        raise pytest.UsageError(f"{where}: variants must be a table, e.g. [tool.gpubench.variants.flash] env = {{ATTN = \"flash\"}}")
    variants: dict[str, Variant] = {}
    for name, body in raw.items():
        body = body or {}
        if not isinstance(body, dict) or set(body) - {"env"}:
            raise pytest.UsageError(f"{where}: variants.{name} takes only env = {{NAME = \"value\"}}")
        env = body.get("env", {})
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise pytest.UsageError(f"{where}: variants.{name}.env must map names to strings")
        variants[name] = Variant(name, dict(env))
    return variants


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

    variants = _parse_variants(table["variants"], where) if "variants" in table else {}

    value, origin = pick("gpubench_gate", "gate")
    gate = None
    if value is not None:
        threshold = parse_fraction(value, origin)
        if not config.getoption("benchmark_compare", None):
            raise pytest.UsageError(f"{origin} needs a baseline; add --benchmark-compare (the newest saved run) "
                                    "or --benchmark-compare=NUM")
        alpha_value, alpha_origin = pick("gpubench_gate_alpha", "gate_alpha")
        alpha = 0.01 if alpha_value is None else parse_fraction(alpha_value, alpha_origin)
        gate = GatePolicy(threshold, alpha)
    value, origin = pick("gpubench_summary", "summary")
    summary_path = None if value is None else Path(str(value))
    if min_time > max_time:
        raise pytest.UsageError(f"min_time {min_time:g} s is above max_time {max_time:g} s; raise max_time or lower min_time")
    policy = SamplingPolicy(warmup_s=warmup, max_time_s=max_time, min_time_s=min_time, min_samples=min_samples, stdrel=stdrel)
    return Settings(requests, policy, cache, catalog, variants, path, gate, summary_path)
