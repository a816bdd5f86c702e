"""The metric registry is the one table of keys, units, titles and definitions: every figure the fixtures and
suites record is in it, and the reports take their titles and units from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_gpubench.collectives import bandwidth_metrics, message
from pytest_gpubench.hardware import Catalog, LocalInventory, parse_gpu_option, resolve_targets
from pytest_gpubench.measure.throughput import Work, throughput_metrics
from pytest_gpubench.metrics import all_metrics, distribution_key, metric, ordered_keys
from pytest_gpubench.serving.metrics import RequestResult, Slo, compute_metrics
from pytest_gpubench.serving.selfcheck import SelfCheck

REPO = Path(__file__).resolve().parent.parent


def test_keys_are_unique_and_every_metric_is_described() -> None:
    keys = [m.key for m in all_metrics()]
    assert len(keys) == len(set(keys))
    for m in all_metrics():
        assert m.title and m.definition, m
        assert re.fullmatch(r"[a-z0-9_]+", m.key), m.key
        assert m.kind in ("cell", "rate", "collective", "serving", "client", "cost"), m


def test_distribution_keys_are_built_in_one_place() -> None:
    assert distribution_key("ttft", "p99") == "ttft_p99_ms"
    p99 = metric("ttft_p99_ms")
    assert p99 is not None and p99.unit == "ms" and p99.title == "TTFT p99"
    with pytest.raises(ValueError, match="'p42' is not a distribution statistic"):
        distribution_key("ttft", "p42")


def test_what_the_producers_record_is_registered() -> None:
    target = resolve_targets(parse_gpu_option(["H200:1"], Catalog()), LocalInventory(gpus=()), Catalog())[0]
    produced = set(throughput_metrics(Work(flops=1e12, bytes=1e9, items=10, tokens=100, dtype="bf16"), 1e-3, target))
    requests = [RequestResult(sent_at=0.0, chunk_times=(0.05, 0.06, 0.07), finished_at=0.08, prompt_tokens=5,
                              output_tokens=3, usage={})]
    produced |= set(compute_metrics(requests, Slo(ttft_ms=100)).as_dict())
    produced |= set(SelfCheck(1.0, 1.0, 0.1, 0.2, 0.3, False, "").as_dict())
    produced |= {"max_concurrency"}  # llm_load adds it when the load caps concurrency
    unregistered = sorted(key for key in produced if metric(key) is None)
    assert unregistered == []


def test_the_collectives_suite_records_registered_metrics() -> None:
    source = (REPO / "bench_suites" / "test_collectives.py").read_text()
    assert "metrics=bandwidth_metrics(" in source  # the suite records what bandwidth_metrics returns
    keys = list(bandwidth_metrics(message("all_reduce", 2**30, 4), 1e-3, link_peak=450.0))
    assert keys and all(metric(key) is not None for key in keys), keys


def test_reports_list_registered_keys_first_then_a_users_own() -> None:
    assert ordered_keys({"zeta", "ttft_p99_ms", "median_s", "alpha"}) == ["median_s", "ttft_p99_ms", "alpha", "zeta"]
