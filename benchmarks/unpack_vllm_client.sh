#!/usr/bin/env bash
# vLLM's benchmark client, for the side-by-side columns of loadgen_capacity.py and loadgen_accuracy.py, without
# installing vLLM and its CUDA dependencies: the wheel's Python files only, unpacked into .vllm-client/.
# Use it with  PYTHONPATH=.vllm-client python benchmarks/loadgen_capacity.py ...  (needs aiohttp, tqdm, torch).
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:-0.33.0}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
python3 -m pip download --quiet --no-deps "vllm==$version" -d "$scratch"
rm -rf .vllm-client
python3 - "$scratch"/vllm-*.whl <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    # The client's import closure: vllm/__init__ and its top-level modules, plus three packages (about 2 MB).
    keep = ("vllm/benchmarks/", "vllm/logging_utils/", "vllm/utils/")
    wheel.extractall(".vllm-client", [n for n in wheel.namelist() if n.endswith(".py") and
                                      (n.count("/") == 1 and n.startswith("vllm/") or n.startswith(keep))])
PY
echo "vLLM $version client unpacked into .vllm-client/"
