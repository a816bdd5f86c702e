#!/usr/bin/env bash
# Regenerate docs/example-report (the README's example) from the H200 runs saved in docs/results, and its
# screenshot with headless Chromium (Debian: apt-get install chromium). tests/test_report_cli.py checks that the
# committed folder is what this makes.
#   run:      the kernel and serving suites on one H200 (suites_h200_serving.json), the suites on H200:4 (the
#             collectives), a variant pair in interleaved rounds
#   baseline: an earlier run of the H200:1 suites, for the run-vs-baseline chart
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
out=docs/example-report
"$venv/bin/python" -m pytest_gpubench.report \
  docs/results/suites_h200_serving.json docs/results/suites_h200x4_gpu_H200-4.json \
  docs/results/variant_envs_h200_interleaved.json \
  --baseline docs/results/suites_h200x4_gpu_H200-1_n0.json --out "$out"
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
# --no-sandbox: as root (CI, containers) Chromium's sandbox refuses to start
chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --hide-scrollbars --user-data-dir="$profile" \
  --window-size=1280,1500 --screenshot="$out/screenshot.png" "file://$PWD/$out/index.html" 2>/dev/null
echo "$out/screenshot.png"
