"""The JAX vs PyTorch generation suite on the CPU: both framework cells pass and save their figures, and outputs
that do not agree fail the cells with a message that says so."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_gpubench.metrics import metric

SUITES = Path(__file__).resolve().parent.parent / "bench_suites"
SUITE_FILES = ("test_generation.py", "gpt_decoder.py")
QUICK = ("--gpu=cpu", "--gpubench-report=no", "--gpubench-max-time=0.3", "--gpubench-min-time=0.05",
         "--gpubench-warmup=0.01", "-p", "no:cacheprovider")
FIGURES = ("prefill_ms", "decode_tokens_per_s", "generation_tokens_per_s", "per_token_p50_ms", "per_token_p90_ms",
           "per_token_p99_ms", "compile_s", "first_generation_s", "generation_warmup_s", "decode_step_device_ms",
           "decode_step_host_overhead_ms", "tokens_per_s")


@pytest.fixture(autouse=True)
def _frameworks() -> None:
    # looked up, not imported: jax first imported in this long-lived process, after the tests before it, aborted
    # the whole test run (SIGABRT) in CI; every use of the frameworks here runs in a subprocess of its own
    for name in ("torch", "jax"):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"the generation suite needs {name}")


def test_both_frameworks_generate_the_same_tokens_and_save_their_figures(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(str(SUITES / "test_generation.py"), *QUICK,
                                           f"--benchmark-json={pytester.path / 'out.json'}")
    result.assert_outcomes(passed=2)
    # the two frameworks are variants of one comparison: the speed-up table holds jax against torch
    result.stdout.fnmatch_lines(["*test_generation?torch-cpu?*torch (baseline)*",
                                 "*test_generation?jax-cpu?*jax*x*"])
    saved = json.loads((pytester.path / "out.json").read_text())
    cells = {entry["name"]: entry for entry in saved["benchmarks"]}
    assert set(cells) == {"test_generation[torch-cpu]", "test_generation[jax-cpu]"}
    for name, entry in cells.items():
        details = entry["extra_info"]["gpubench"]
        generation = details["generation"]
        assert details["timer"] == "host_clock_sync_per_token"
        assert details["variant"] == generation["framework"]
        assert details["baseline_variant"] == "torch"
        assert set(FIGURES) <= set(details["metrics"]), (name, sorted(details["metrics"]))
        metrics = details["metrics"]
        assert [key for key in metrics if metric(key) is None] == []  # units and definitions for the reports
        assert 0 < metrics["per_token_p50_ms"] <= metrics["per_token_p90_ms"] <= metrics["per_token_p99_ms"]
        # one sample a decode step: the prefill's token is not among them, nor are warm-up generations
        assert len(entry["stats"]["data"]) == generation["measured_runs"] * (generation["new_tokens"] - 1)
        # fp32 on the CPU: every greedy token of one framework is the other's
        assert generation["agreement"]["tokens_agree"] == 1.0
        assert generation["agreement"]["first_divergence_step"] is None
        assert generation["agreement"]["against"] != generation["framework"]
        assert generation["weights"].endswith("the same buffers (DLPack)")
        assert generation["cost"]["usd_per_1k_tokens"] == "n/a: cpu has no price"
        assert details["cost"]["usd_per_1k_tokens"] is None
    assert cells["test_generation[jax-cpu]"]["extra_info"]["gpubench"]["metrics"]["compile_s"] > 0
    assert cells["test_generation[torch-cpu]"]["extra_info"]["gpubench"]["metrics"]["compile_s"] == 0


def test_cells_fail_and_say_so_when_jax_computes_with_other_weights(pytester: pytest.Pytester) -> None:
    for name in SUITE_FILES:
        shutil.copy(SUITES / name, pytester.path / name)
    # a JAX model that reads its matrices shifted by a column: the bug a wrong layout or transpose makes
    pytester.makeconftest("""
        import jax.numpy as jnp
        import pytest

        import gpt_decoder

        @pytest.fixture(autouse=True)
        def _jax_reads_other_weights(monkeypatch):
            share = gpt_decoder.share_with_jax

            def shifted(tensor, device):
                array, shared = share(tensor, device)
                return (jnp.roll(array, 1, axis=-1) if array.ndim == 2 else array), shared

            monkeypatch.setattr(gpt_decoder, "share_with_jax", shifted)
    """)
    result = pytester.runpytest_subprocess("test_generation.py", *QUICK)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*OutputsDisagree: torch and jax disagree on the prefill logits of the same weights "
                                 "and prompts: relative error * > 0.0001 allowed for fp32*"])


def test_the_agreement_check_itself(pytester: pytest.Pytester) -> None:
    """check_agreement on tiny runs of both frameworks, in a subprocess (see _frameworks)."""
    pytester.makepyfile(test_agreement=AGREEMENT_CHECKS.replace("SUITES_PATH", repr(str(SUITES))))
    result = pytester.runpytest_subprocess("test_agreement.py", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


AGREEMENT_CHECKS = '''
import dataclasses
import sys
from typing import Any

import pytest

sys.path.insert(0, SUITES_PATH)
import gpt_decoder  # noqa: E402


def _tiny_runs(jax_seed: int) -> tuple[Any, Any]:
    import jax

    config = gpt_decoder.DecoderConfig(vocab=256, d_model=32, layers=1, heads=2, kv_heads=1, head_dim=16, d_ff=64,
                                       dtype="fp32")
    shape = gpt_decoder.GenerationShape(batch=2, prompt_len=8, new_tokens=6)
    prompts = gpt_decoder.make_prompts(config, shape, 0)
    torch_weights = gpt_decoder.make_weights(config, shape.max_seq, 0, "cpu")
    jax_weights = gpt_decoder.make_weights(config, shape.max_seq, jax_seed, "cpu")
    torch_run = gpt_decoder.TorchDecoder(torch_weights, config, shape, prompts, "cpu").generate()
    jax_run = gpt_decoder.JaxDecoder(jax_weights, config, shape, prompts, jax.devices("cpu")[0]).generate()
    return torch_run, jax_run


def test_agreement_check_names_the_first_token_that_differs_in_fp32():
    torch_run, jax_run = _tiny_runs(jax_seed=0)
    agreement = gpt_decoder.check_agreement(torch_run, jax_run, "fp32")
    assert agreement.tokens_agree == 1.0 and agreement.logits_rel_err < 1e-5
    tokens = jax_run.tokens.copy()
    tokens[1, 3] = (tokens[1, 3] + 1) % 256
    with pytest.raises(gpt_decoder.OutputsDisagree, match=r"greedy tokens differ in fp32 at new token 3 of row 1"):
        gpt_decoder.check_agreement(torch_run, dataclasses.replace(jax_run, tokens=tokens), "fp32")


def test_agreement_check_in_bf16_allows_rounding_but_not_other_weights():
    import numpy as np

    torch_run, same_weights = _tiny_runs(jax_seed=0)
    logits = torch_run.prefill_logits
    # bf16-sized differences (0.5 % of each logit) and a path that parts after its first token: accepted
    rounded = logits * (1 + 0.005 * np.random.default_rng(0).standard_normal(logits.shape)).astype(np.float32)
    tokens = same_weights.tokens.copy()
    tokens[:, 2:] = (tokens[:, 2:] + 1) % 256
    agreement = gpt_decoder.check_agreement(
        torch_run, dataclasses.replace(same_weights, prefill_logits=rounded, tokens=tokens), "bf16")
    assert agreement.first_divergence_step == 2 and agreement.first_tokens_agree == 2
    _, other_weights = _tiny_runs(jax_seed=1)
    with pytest.raises(gpt_decoder.OutputsDisagree, match=r"relative error .* > 0.05 allowed for bf16"):
        gpt_decoder.check_agreement(torch_run, other_weights, "bf16")
'''


KERNELS_SCRIPT = SUITES.parent / "benchmarks" / "generation_kernels.py"


def _run_kernels_script(pytester: pytest.Pytester, *env: str) -> subprocess.CompletedProcess[str]:
    command = ["env", *env, sys.executable, str(KERNELS_SCRIPT), "--target", "cpu", "--steps", "3",
               "--json", str(pytester.path / "kernels.json")]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=pytester.path)


def test_the_kernel_breakdown_names_each_frameworks_kernels_and_adds_them_up(pytester: pytest.Pytester) -> None:
    done = _run_kernels_script(pytester)
    assert done.returncode == 0, done.stdout + done.stderr
    results = {r["framework"]: r for r in json.loads((pytester.path / "kernels.json").read_text())}
    assert set(results) == {"torch", "jax"}
    torch_names = {row["name"]: row for row in results["torch"]["top"]}
    # the model's projections are aten::mm on the CPU, a matmul; the attention is torch's SDPA
    assert torch_names["aten::mm"]["class"] == "matmul"
    assert any(row["class"] == "attention" for row in torch_names.values()), torch_names
    # XLA's CPU runtime runs fusions, one thunk each; its bookkeeping events are not counted as kernels
    assert all("fusion" in row["name"] or row["name"].startswith(("copy", "dot", "custom")) for row in
               results["jax"]["top"]), results["jax"]["top"]
    for framework, result in results.items():
        assert result["steps_profiled"] == 3 and result["position"] == 24, framework  # 16 prompt + 16 new / 2
        assert 0 < result["kernel_ms_per_step"] and result["kernels_per_step"] >= result["distinct_kernels"] > 0
        assert sum(result["classes_ms_per_step"].values()) == pytest.approx(result["kernel_ms_per_step"])
        shares = [row["share_pct"] for row in result["top"]]
        assert shares == sorted(shares, reverse=True) and sum(shares) <= 100 + 1e-9, framework
    # torch's operators run one after another on this thread: their self times fit in the steps' wall time
    assert results["torch"]["kernel_ms_per_step"] <= results["torch"]["wall_ms_per_step"]
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["per", "decode", "step", "torch", "jax"]
    assert any(line.split()[-1] == "aten::mm" for line in lines if line.strip())


def test_a_framework_that_fails_keeps_its_stderr_and_the_other_still_reports(pytester: pytest.Pytester) -> None:
    done = _run_kernels_script(pytester, "JAX_PLATFORMS=no_such_backend")
    assert done.returncode == 1
    assert "jax: FAILED (exit 1)" in done.stdout and "no_such_backend" in done.stdout
    results = {r["framework"]: r for r in json.loads((pytester.path / "kernels.json").read_text())}
    assert "error" not in results["torch"] and results["torch"]["kernel_ms_per_step"] > 0
    assert "Traceback" in results["jax"]["stderr"]


@pytest.mark.parametrize(("name", "kind"), [
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off", "matmul"),
    ("nvjet_tst_128x64_64x8_2x1_v_bz_coopA_TNT", "matmul"),
    ("gemm_fusion_dot_3", "matmul"),
    ("void flash_fwd_splitkv_kernel<Flash_fwd_kernel_traits<64, 64, 256, 4, false>>", "attention"),
    ("fmha_cutlassF_bf16_aligned_64x64_rf_sm80", "attention"),
    ("Memcpy DtoH (Device -> Pinned)", "copy"),
    ("void at::native::unrolled_elementwise_kernel<at::native::direct_copy_kernel_cuda>", "copy"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<c10::BFloat16>>", "other"),
    ("loop_multiply_fusion_2", "other"),
    ("input_reduce_fusion", "other"),
])
def test_kernel_classes_follow_the_names_gpu_profilers_record(name: str, kind: str) -> None:
    spec = importlib.util.spec_from_file_location("generation_kernels", KERNELS_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.kernel_class(name) == kind
