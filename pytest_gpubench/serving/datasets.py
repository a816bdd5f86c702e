"""Prompts for the load generator: random prompts of a given token length made with the server's own
tokenizer (as vLLM's random dataset), or a JSON file of prompts (as the seeds' benchmark_prompts.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def random_prompts(tokenizer: Any, num: int, input_len: int, seed: int = 0) -> list[str]:
    """``num`` prompts of ``input_len`` tokens each under ``tokenizer`` (a transformers tokenizer, or a path
    to one): random ids without special tokens, decoded, re-encoded and trimmed until the length holds."""
    if isinstance(tokenizer, (str, Path)):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
    rng = np.random.default_rng(seed)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    vocabulary = np.array([i for i in range(len(tokenizer)) if i not in special])
    prompts = []
    for _ in range(num):
        ids = rng.choice(vocabulary, size=input_len).tolist()
        for _ in range(10):  # decoding then encoding can merge or split tokens: trim or pad and try again
            text = tokenizer.decode(ids)
            again = tokenizer.encode(text, add_special_tokens=False)
            if len(again) == input_len:
                break
            ids = again[:input_len] if len(again) > input_len else again + rng.choice(vocabulary, size=input_len - len(again)).tolist()
        prompts.append(text)
    return prompts


def prompts_from_json(path: str | Path) -> list[Any]:
    """A list of strings, or of objects with "prompt", "text" or "messages", optionally under "prompts"."""
    data = json.loads(Path(path).read_text())
    if isinstance(data, dict):
        data = data.get("prompts", data.get("data"))
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path}: expected a non-empty list of prompts")
    prompts: list[Any] = []
    for item in data:
        if isinstance(item, str):
            prompts.append(item)
        elif isinstance(item, dict) and ("messages" in item or "prompt" in item or "text" in item):
            prompts.append(item.get("messages") or item.get("prompt") or item.get("text"))
        else:
            raise ValueError(f"{path}: each prompt is a string or an object with prompt, text or messages; got {item!r:.80}")
    return prompts
