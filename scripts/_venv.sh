# Sourced by bench.sh and test.sh: make the venv and install what the project needs with every package pinned
# by a constraints file, once per change of pyproject.toml, this script or that file. Sets $venv.
#
#   GPUBENCH_CONSTRAINTS  highest (default): the newest versions pyproject.toml allows, as scripts/lock.sh last
#                         resolved them, so the README's commands install the same everywhere; lowest: the oldest
#                         it allows (the core, xdist, and the report and histogram extras, whose tests CI must run:
#                         torch, jax and the serving stack are extras whose tests skip without them). CI tests both
#                         (.ci/run).
#   VENV                  the venv's folder, relative to the repository (default .venv)
#   PYTHON                what makes a new venv: a command, or a version such as 3.10 (default python3)
#
# torch: with no NVIDIA GPU it is the pinned torch==2.13.0, whose CPU wheel is small (an unpinned torch pulls
# gigabytes of CUDA packages); on a GPU host the pin is dropped, so pip picks the build for the host's CUDA.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/_python.sh"
constraints_set="${GPUBENCH_CONSTRAINTS:-highest}"
case "$constraints_set" in
  highest) extras="torch,jax,xdist,test" ;;
  lowest) extras="xdist,report,histogram" ;;
  *) echo "GPUBENCH_CONSTRAINTS=$constraints_set: use highest or lowest" >&2; exit 2 ;;
esac
constraints="$root/constraints/$constraints_set.txt"
venv="${VENV:-.venv}"
case "$venv" in /*) ;; *) venv="$root/$venv" ;; esac
[ -x "$venv/bin/python" ] || "$(gpubench_python "${PYTHON:-python3}")" -m venv "$venv"
stamp="$venv/.gpubench-installed"
want="$(cat "$root/pyproject.toml" "$root/scripts/_venv.sh" "$constraints" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setting up $venv with constraints/$constraints_set.txt (once) ..." >&2
  pins="$constraints"
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    pins="$venv/.gpubench-constraints.txt"
    grep -v -i '^torch==' "$constraints" > "$pins"
  fi
  # the venv's own tools too: environment builds for variants and commits use its setuptools
  "$venv/bin/python" -m pip install -q -c "$pins" --upgrade pip setuptools >&2
  "$venv/bin/python" -m pip install -q -c "$pins" -e "$root[$extras]" >&2
  echo "$want" > "$stamp"
fi
