#!/usr/bin/env bash
# Runs every speed benchmark once on a GPU machine, in one command, each under its own time cap.
#
# Usage (repository root):  OUT=/some/dir bash benchmarks/gpu_run.sh
#   WHEELS=DIR   install the wheels in DIR (--no-deps) into a private site folder first; the
#                machine's own jax/jaxlib/CUDA plugin are kept (the wheels carry distrax,
#                tfp-nightly, flowjax and the pure-Python versions this repository is tested with)
#   QUICK=1      smoke run: every script with --quick (checks this script, not the GPU)
#   PYTHON=...   interpreter (default python3)
#   ONLY="a b"   run only these (names as in the run lines below)
#   TESTS="..."  then run these pytest arguments (capped by CAP_TESTS, default 120 s)
#   ACCURACY_SEEDS=N  then accuracy.py on every data set with N seeds on the machine's CPUs
#                (JAX_PLATFORMS=cpu, one process per core but one; capped by CAP_ACCURACY,
#                default 330 s; 10 seeds took 235 s on the 16 cores of an H100 machine)
#
# Writes $OUT/log.txt (everything printed) and $OUT/results.tar.gz (each benchmark's --out
# folder: JSON, figures). accuracy.py runs only when asked (ACCURACY_SEEDS): its figures are NLLs,
# not times, and do not need the GPU.
set -u
PY=${PYTHON:-python3}
OUT=${OUT:?set OUT to a folder for the results}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
RES=$(mktemp -d)
export PYTHONUNBUFFERED=1
exec > >(tee -a "$LOG") 2>&1

if [ -n "${WHEELS:-}" ]; then
  SITE=$(mktemp -d)
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$WHEELS"/*.whl || echo "wheel install failed"
  export PYTHONPATH="$PWD:$SITE"
  if ! $PY -c "import jaxmaf, flowjax, distrax, flax.nnx" ; then
    # The carried flax/optax/chex/equinox may not suit the machine's jax: keep the machine's.
    # (Seen 2026-11-25: flax 0.12.8 does not import under jax 0.11.2; flax 0.12.10 does.)
    echo "import failed with every carried wheel; retrying with the machine's flax/optax/chex"
    SITE=$(mktemp -d)
    ls "$WHEELS"/*.whl | grep -vE '/(flax|optax|chex|equinox)-' \
      | xargs $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target "$SITE"
    export PYTHONPATH="$PWD:$SITE"
  fi
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm \
  --format=csv 2>/dev/null || echo "no nvidia-smi"
$PY - <<'EOF'
import importlib

import jax

print("jax", jax.__version__, "backend", jax.default_backend(), jax.devices())
for m in ("flax", "optax", "distrax", "flowjax", "equinox", "numpy"):
    try:
        print(m, importlib.import_module(m).__version__)
    except Exception as e:  # noqa: BLE001
        print(m, "unavailable:", e)
import jaxmaf

from flax import nnx

flow = jaxmaf.MAF(2, num_layers=2, hidden_dims=(16,), rngs=nnx.Rngs(0))
x = flow.sample(jax.random.key(1), (4,))
print("smoke log_prob", flow.log_prob(x))
EOF

Q=""
[ "${QUICK:-0}" = 1 ] && Q="--quick"

run() {  # run NAME CAP_SECONDS SCRIPT ARGS...
  local name=$1 cap=$2
  shift 2
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
  echo
  echo "######## $name (cap ${cap}s) $(date -u +%T)"
  local t0=$SECONDS
  timeout --signal=INT --kill-after=10 "$cap" $PY "$@" --out "$RES/$name" $Q
  echo "######## $name: exit $? after $((SECONDS - t0)) s"
}

run logdet_scaling "${CAP_LOGDET:-150}" benchmarks/logdet_scaling.py --max-dim 4096
run logdet_x64 "${CAP_LOGDET64:-120}" benchmarks/logdet_scaling.py --x64 --max-dim 1024 \
  --layer-max-dim 128 --diag-max-dim 4194304
run throughput "${CAP_THROUGHPUT:-170}" benchmarks/throughput.py --min-seconds 3
run training_throughput "${CAP_TRAINING:-110}" benchmarks/training_throughput.py
run jacobi_sampling "${CAP_JACOBI:-80}" benchmarks/jacobi_sampling.py
# fit_variational against numpyro's AutoIAFNormal (steps/s, KL), three seeds
for s in 0 1 2; do
  run "variational_seed$s" "${CAP_VARIATIONAL:-110}" examples/variational.py --seed "$s"
done
# five variants (two with sticking the landing, one through the sequential log_prob) and numpyro
run variational_speed "${CAP_VISPEED:-300}" benchmarks/variational_speed.py

if [ -n "${ACCURACY_SEEDS:-}" ] && [ -z "${ONLY:-}" ]; then
  echo
  echo "######## accuracy, $ACCURACY_SEEDS seeds on the CPUs (cap ${CAP_ACCURACY:-330}s) $(date -u +%T)"
  JAX_PLATFORMS=cpu timeout --signal=INT --kill-after=10 "${CAP_ACCURACY:-330}" $PY \
    benchmarks/accuracy.py --datasets all --seeds "$ACCURACY_SEEDS" \
    --jobs "$(($(nproc) > 1 ? $(nproc) - 1 : 1))" --out "$RES/accuracy"
  echo "######## accuracy: exit $?"
fi

if [ -n "${TESTS:-}" ]; then
  echo
  echo "######## tests (cap ${CAP_TESTS:-120}s) $(date -u +%T)"
  # shellcheck disable=SC2086
  timeout --signal=INT --kill-after=10 "${CAP_TESTS:-120}" $PY -m pytest -q -p no:cacheprovider $TESTS
  echo "######## tests: exit $?"
fi

tar -czf "$OUT/results.tar.gz" -C "$RES" . && echo "results in $OUT/results.tar.gz"
