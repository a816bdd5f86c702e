# Sourced by bench.sh and test.sh: make .venv and install what the project needs, once per change of
# pyproject.toml. With no NVIDIA GPU, torch is pinned to 2.13.0, whose CPU wheel is small; an unpinned
# torch would pull gigabytes of CUDA packages.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python="${PYTHON:-python3}"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
stamp="$venv/.gpubench-installed"
want="$(cat "$root/pyproject.toml" "$root/scripts/_venv.sh" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setting up $venv (once) ..." >&2
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "$venv/bin/python" -m pip install -q -e "$root[torch,jax,xdist,test]" >&2
  else
    "$venv/bin/python" -m pip install -q "torch==2.13.0" >&2
    "$venv/bin/python" -m pip install -q -e "$root[torch,jax,xdist,test]" >&2
  fi
  echo "$want" > "$stamp"
fi
