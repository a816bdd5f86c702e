#!/usr/bin/env bash
# One call on the GPU machine that runs several measurements in priority order, each bounded so that the
# whole call ends by DEADLINE seconds (the session's device time is short). Every part's output goes to
# its own log; after each part, everything so far is packed into $OUT/results.tgz, so a call cut short still
# brings back what it measured.
#
#   bash benchmarks/device_session.sh PART:LIMIT_S [PART:LIMIT_S ...]      (parts: see the case below)
#
# Needs .before/ (git archive <commit> pytest_gpubench | tar -x -C .before) for suite_before, and .whl/ (the
# serving extras as wheels) for serving: both carried.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
# where the package is installed (a dry run here) its entry point loads the plugin; naming it twice is an error
python3 -c "import importlib.metadata as m, sys; sys.exit(any(e.name == 'gpubench' for e in m.entry_points(group='pytest11')))" \
  && export PYTEST_PLUGINS=pytest_gpubench.plugin
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
DEADLINE=${DEADLINE:-420}
OUT=${OUT:-/tmp/gpubench-device-out}
WORK=/tmp/gpubench-results
mkdir -p "$OUT" "$WORK"
start=$SECONDS
suites="bench_suites/test_matmul.py bench_suites/test_bandwidth.py"

run_part() {
  local name=$1
  case "$name" in
    suite_before) python3 benchmarks/suite_wall_time.py --label before --package-root .before \
                    --json "$WORK/suite_before.json" -- $suites --gpu H200:1 ;;
    suite_after) python3 benchmarks/suite_wall_time.py --label after --json "$WORK/suite_after.json" -- \
                   $suites --gpu H200:1 ;;
    accuracy) python3 benchmarks/timer_accuracy.py --repeats "${ACCURACY_REPEATS:-2}" --kernels matmul_bf16_8192,add_fp32_256MB \
                --from-rest --json "$WORK/timer_accuracy_from_rest.json" ;;
    jax_accuracy) python3 benchmarks/jax_timer_accuracy.py --repeats 2 --json "$WORK/jax_timer_accuracy.json" ;;
    generation) python3 -m pytest bench_suites/test_generation.py --gpu H200:1 -p no:cacheprovider -rs -v \
                  --benchmark-json="$WORK/generation_h200.json" ;;
    trace_cost) python3 benchmarks/jax_trace_cost.py --json "$WORK/jax_trace_cost.json" ;;
    kernels) python3 benchmarks/generation_kernels.py --target gpu --json "$WORK/generation_kernels_h200.json" ;;
    dataloader) python3 -m pytest bench_suites/test_dataloader.py --gpu H200:1 -p no:cacheprovider -rs -v \
                  --benchmark-json="$WORK/dataloader_h200.json" ;;
    serving) python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
               --target /tmp/site .whl/*.whl \
             && HF_HUB_OFFLINE=1 HF_HUB_DISABLE_UPDATE_CHECK=1 PYTHONPATH=/tmp/site:$PYTHONPATH python3 -m pytest \
               bench_suites/test_serving.py --gpu H200:1 -k transformers -p no:cacheprovider -rs -v \
               --benchmark-json="$WORK/serving_h200.json"; code=$?; cp -r gpubench-logs "$WORK/serving-logs" 2>/dev/null
             return $code ;;
    *) echo "unknown part $name"; return 2 ;;
  esac
}

{
  nvidia-smi --query-gpu=name,uuid,driver_version,temperature.gpu,power.draw,power.limit,clocks.sm,clocks.max.sm \
    --format=csv
  git log -1 --format='commit %h %s' 2>/dev/null || true
  cat .before/COMMIT 2>/dev/null | sed 's/^/before: /'
} > "$WORK/machine.txt" 2>&1

for spec in "$@"; do
  name=${spec%%:*}
  limit=${spec##*:}
  left=$((DEADLINE - (SECONDS - start)))
  [ "$limit" -gt "$left" ] && limit=$left
  if [ "$limit" -lt 15 ]; then
    echo "== $name: not run, $limit s would be its limit ($left s left of $DEADLINE)" | tee -a "$WORK/summary.txt"
    continue
  fi
  began=$SECONDS
  timeout -k 5 "$limit" bash -c "$(declare -f run_part); suites='$suites' WORK='$WORK' run_part $name" \
    > "$WORK/$name.log" 2>&1
  code=$?
  echo "== $name: exit $code after $((SECONDS - began)) s (limit $limit s, at $((SECONDS - start)) s)" \
    | tee -a "$WORK/summary.txt"
  tail -n 4 "$WORK/$name.log"
  tar -czf "$OUT/results.tgz" -C "$WORK" .
done
cp "$WORK/summary.txt" "$OUT/summary.txt" 2>/dev/null || true
