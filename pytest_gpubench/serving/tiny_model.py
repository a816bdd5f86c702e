"""Random-weight Llamas and a byte-level BPE tokenizer, built offline in seconds: a real model for
`transformers serve` (or vLLM) where no weights can be downloaded (CI, tests, the serving suite on a GPU).

Two sizes: ``tiny`` (0.43 M parameters, float32) runs on a CPU; ``1b`` (a Llama 3.2 1B shape with
Llama 2's 32,000-token vocabulary, 1.10 B parameters, bfloat16) makes a GPU do real work per token.
Weights are drawn straight into a safetensors file, as the model's own initialisation would draw them
(normal, std 0.02; norms 1), without building the model: 1.1 B parameters take seconds, not minutes.
"""

from __future__ import annotations

import itertools
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL_TOKENS = ("<unk>", "<s>", "<pad>")
INITIALIZER_RANGE = 0.02


@dataclass(frozen=True)
class LlamaSize:
    """The shape of a random Llama. Embeddings are not tied (as Llama 2), so the output head has its own
    vocab x hidden weights."""

    name: str
    vocab_size: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    dtype: str  # "float32" or "bfloat16": what the weights are stored in, and what the server computes in

    def __post_init__(self) -> None:
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise ValueError(f"{self.name}: hidden ({self.hidden}) must divide by heads ({self.heads}), and heads by "
                             f"kv_heads ({self.kv_heads})")
        if self.vocab_size < len(SPECIAL_TOKENS) + 256 + 1:
            raise ValueError(f"{self.name}: vocab_size {self.vocab_size} leaves no room past the 256 byte tokens and "
                             f"{len(SPECIAL_TOKENS)} special ones; use at least 260")

    @property
    def parameter_count(self) -> int:
        """Every weight the model holds, computed from the shape alone (nothing allocated)."""
        head_dim = self.hidden // self.heads
        attention = 2 * self.hidden * self.hidden + 2 * self.hidden * self.kv_heads * head_dim  # q, o; k, v
        mlp = 3 * self.hidden * self.intermediate  # gate, up, down
        per_layer = attention + mlp + 2 * self.hidden  # and two RMSNorm weights
        return self.layers * per_layer + 2 * self.vocab_size * self.hidden + self.hidden  # embeddings, head, norm

    def config(self, **token_ids: Any) -> Any:
        """The LlamaConfig of this shape (``token_ids``: bos/pad/eos ids)."""
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=self.vocab_size, hidden_size=self.hidden, intermediate_size=self.intermediate,
            num_hidden_layers=self.layers, num_attention_heads=self.heads, num_key_value_heads=self.kv_heads,
            max_position_embeddings=4096, tie_word_embeddings=False, initializer_range=INITIALIZER_RANGE,
            dtype=self.dtype, architectures=["LlamaForCausalLM"],  # servers pick the model class by it
            **token_ids,
        )


SIZES = {
    "tiny": LlamaSize("tiny", vocab_size=512, hidden=128, layers=2, heads=4, kv_heads=2, intermediate=256,
                      dtype="float32"),
    # Llama 3.2 1B's layers (hidden 2048, 16 layers, 32 query / 8 key-value heads, MLP 8192) with a 32,000-token
    # vocabulary: a small model that keeps an H200 busy per token without taking minutes to write
    "1b": LlamaSize("1b", vocab_size=32000, hidden=2048, layers=16, heads=32, kv_heads=8, intermediate=8192,
                    dtype="bfloat16"),
}


def size_named(size: str | LlamaSize) -> LlamaSize:
    if isinstance(size, LlamaSize):
        return size
    if size not in SIZES:
        raise ValueError(f"size={size!r}; use one of {', '.join(SIZES)} or a LlamaSize(...)")
    return SIZES[size]


def _byte_level_bpe(vocab_size: int) -> Any:
    """A byte-level BPE of exactly ``vocab_size`` tokens, made without training: the 256 byte tokens, then
    every pair of ASCII letters, then letter triples until the vocabulary is full. Nearly every token a
    random-weight model emits is then printable text, so a stream carries content in (almost) every chunk."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *alphabet])}
    merges: list[tuple[str, str]] = []
    letters = string.ascii_letters  # bytes below 0x80 that byte-level BPE writes as themselves
    pairs = [(a, b) for a in letters for b in letters]
    triples = ((a + b, c) for a, b in pairs for c in letters)
    for left, right in itertools.chain(pairs, triples):
        if len(vocab) >= vocab_size:
            break
        vocab[left + right] = len(vocab)
        merges.append((left, right))
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    return bpe


def _random_weights(config: Any, dtype: str, seed: int) -> dict[str, Any]:
    """Every tensor of the model's state dict, drawn as its own initialisation draws it. The names and
    shapes come from the model built on the meta device, which allocates nothing."""
    import torch
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        shapes = {name: tuple(t.shape) for name, t in LlamaForCausalLM(config).state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    torch_dtype = getattr(torch, dtype)
    weights = {}
    for name, shape in shapes.items():
        if name.endswith("norm.weight"):
            weights[name] = torch.ones(shape, dtype=torch_dtype)
        else:
            weights[name] = torch.empty(shape, dtype=torch_dtype).normal_(0.0, INITIALIZER_RANGE, generator=generator)
    return weights


def build_random_llama(path: str | Path, size: str | LlamaSize = "tiny", seed: int = 0) -> Path:
    """Write a model folder that `transformers serve PATH` (and vLLM) loads; returns PATH. Generation never
    stops early: the model has no end-of-sequence token, so every request yields exactly max_tokens tokens.
    A folder with a config.json is reused: config.json is written last, so only a complete build has one."""
    from safetensors.torch import save_file
    from transformers import GenerationConfig, PreTrainedTokenizerFast

    shape = size_named(size)
    path = Path(path)
    if (path / "config.json").exists():
        return path
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=_byte_level_bpe(shape.vocab_size), unk_token="<unk>",
                                        bos_token="<s>", pad_token="<pad>")
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)
    token_ids = {"bos_token_id": tokenizer.bos_token_id, "pad_token_id": tokenizer.pad_token_id, "eos_token_id": None}
    config = shape.config(**token_ids)
    save_file(_random_weights(config, shape.dtype, seed), str(path / "model.safetensors"), metadata={"format": "pt"})
    GenerationConfig(**token_ids).save_pretrained(path)
    config.save_pretrained(path)
    return path


def build_tiny_llama(path: str | Path, vocab_size: int = 512, hidden: int = 128, layers: int = 2, seed: int = 0) -> Path:
    """The tiny size, or a tiny shape of your own: a model that runs on a CPU."""
    tiny = SIZES["tiny"]
    shape = tiny if (vocab_size, hidden, layers) == (tiny.vocab_size, tiny.hidden, tiny.layers) else LlamaSize(
        "tiny", vocab_size, hidden, layers, tiny.heads, tiny.kv_heads, hidden * 2, tiny.dtype)
    return build_random_llama(path, shape, seed)
