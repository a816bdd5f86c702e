#!/usr/bin/env bash
# The tests: pytest runs pytest (pytester) on CPU; GPU tests skip where there is no GPU. Installs the versions
# pinned in constraints/highest.txt (see _venv.sh for GPUBENCH_CONSTRAINTS=lowest, VENV and PYTHON).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
exec "$venv/bin/python" -m pytest tests -p no:cacheprovider -q "$@"
