#!/usr/bin/env bash
# The main job: run the bench suites on this host's GPUs (the CPU when it has none), print the results
# table and save a pytest-benchmark run under .benchmarks/ for later --benchmark-compare.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
exec "$venv/bin/python" -m pytest bench_suites -p no:cacheprovider --benchmark-autosave "$@"
