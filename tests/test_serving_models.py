"""The random-weight Llamas the serving suite builds offline: each size's shape and parameter count, and a
built folder that transformers loads with every weight in place, in the size's dtype."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from pytest_gpubench.serving.tiny_model import SIZES, LlamaSize, build_random_llama, build_tiny_llama  # noqa: E402


def meta_parameter_count(size: LlamaSize) -> int:
    """What transformers itself builds from the size's config, on the meta device: nothing is allocated."""
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(size.config(bos_token_id=1, pad_token_id=2, eos_token_id=None))
    return sum(p.numel() for p in model.parameters())


def test_1b_size_has_about_1_1_billion_parameters_as_transformers_counts_them() -> None:
    size = SIZES["1b"]
    assert (size.hidden, size.layers, size.heads, size.kv_heads, size.intermediate, size.vocab_size) == (
        2048, 16, 32, 8, 8192, 32000)
    assert size.dtype == "bfloat16"
    assert size.parameter_count == meta_parameter_count(size) == 1_104_218_112


def test_tiny_size_parameter_count_matches_transformers() -> None:
    assert SIZES["tiny"].parameter_count == meta_parameter_count(SIZES["tiny"])


def test_unknown_size_and_bad_shapes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="size='7b'; use one of tiny, 1b"):
        build_random_llama(tmp_path / "m", "7b")
    with pytest.raises(ValueError, match="must divide by heads"):
        LlamaSize("odd", 512, 100, 1, 3, 1, 200, "float32")
    with pytest.raises(ValueError, match="use at least 260"):
        LlamaSize("small-vocab", 100, 64, 1, 4, 2, 128, "float32")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_built_folder_loads_whole_in_the_sizes_dtype(tmp_path: Path, dtype: str) -> None:
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # the 1b size's recipe (bfloat16, untied head, 4:1 grouped-query heads) at a size a CPU builds in a moment
    size = LlamaSize("small", vocab_size=1000, hidden=64, layers=2, heads=8, kv_heads=2, intermediate=128, dtype=dtype)
    path = build_random_llama(tmp_path / "m", size, seed=3)
    with safe_open(str(path / "model.safetensors"), "pt") as weights:
        tensors = {name: weights.get_tensor(name) for name in weights.keys()}  # noqa: SIM118 - safe_open has no iterator
    assert {str(t.dtype) for t in tensors.values()} == {f"torch.{dtype}"}
    assert sum(t.numel() for t in tensors.values()) == size.parameter_count
    assert all(bool((t == 1).all()) for name, t in tensors.items() if name.endswith("norm.weight"))
    projection = tensors["model.layers.0.mlp.up_proj.weight"].float()
    assert abs(projection.std().item() - 0.02) < 0.002  # drawn as Llama's own initialisation draws it
    loaded: Any = AutoModelForCausalLM.from_pretrained(path, output_loading_info=True)
    model, info = loaded
    assert not any(info.values()), info  # no weight missing, unexpected or mismatched
    assert str(model.dtype) == f"torch.{dtype}"
    tokenizer: Any = AutoTokenizer.from_pretrained(path)
    assert len(tokenizer) == size.vocab_size == model.config.vocab_size
    # no end-of-sequence token anywhere: every request yields exactly max_tokens tokens
    assert model.config.eos_token_id is None and model.generation_config.eos_token_id is None
    # printable text for (nearly) every token a random model emits: a stream carries content in its chunks
    letters = sum(tokenizer.decode([i]).isalpha() for i in range(len(tokenizer)))
    assert letters >= size.vocab_size - 3 - 256 + 52


def test_a_built_folder_is_reused_and_the_tiny_builder_still_takes_its_shape(tmp_path: Path) -> None:
    path = build_tiny_llama(tmp_path / "tiny")
    config = json.loads((path / "config.json").read_text())
    assert (config["vocab_size"], config["hidden_size"], config["num_hidden_layers"]) == (512, 128, 2)
    written = (path / "model.safetensors").stat().st_mtime_ns
    assert build_random_llama(path, "tiny") == path
    assert (path / "model.safetensors").stat().st_mtime_ns == written  # config.json marks a finished build
    custom = json.loads((build_tiny_llama(tmp_path / "custom", vocab_size=300, hidden=64, layers=1) / "config.json").read_text())
    assert (custom["vocab_size"], custom["hidden_size"], custom["num_hidden_layers"]) == (300, 64, 1)
