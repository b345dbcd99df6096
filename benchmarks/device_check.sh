#!/usr/bin/env bash
# One bounded accelerator check (prints numbers; not a test). Under 8 minutes on one H200.
#
#   bash benchmarks/device_check.sh            on the GPU machine (the full check)
#   bash benchmarks/device_check.sh --smoke    anywhere, CPU is fine: tiny sizes, 1 step
#   bash benchmarks/device_check.sh --prepare [NAME==VERSION ...]
#                                              HERE, before the device call: stage what the
#                                              device machine lacks (see "Staging" below)
#
# Prints, and with $OUT set also writes to $OUT/device_check.txt (+ $OUT/train.jsonl):
#   (a) the bilm-tf fixture embeddings' max |diff| in float32 and bfloat16 (benchmarks/fixture_check.py)
#   (b) benchmarks/train.py --shapes small,medium,original --batch-sizes 128,256,512 --hoist on,off:
#       tokens/s and MFU per line, one train.py process per shape, each under its own `timeout`
#   (c) compile seconds and memory per line (compiled.memory_analysis(); the device's
#       peak_bytes_in_use high-water mark), summarised from the JSON records at the end.
#
# MFU peaks (H200 SXM datasheet, dense, i.e. half of the "with sparsity" figures):
#   float32 runs:  494.7 TFLOP/s = TF32 tensor cores. XLA computes float32 dots at JAX's default
#                  precision with TF32 on Hopper, so TF32 is the unit those matmuls run on (the
#                  CUDA-core FP32 peak, 67 TFLOP/s, would overstate MFU ~7x; the 989 TFLOP/s
#                  "TF32" figure is with 2:4 sparsity).
#   bfloat16 runs: 989.5 TFLOP/s = BF16 dense.
# Override with PEAK_TFLOPS=...; train.py also prints the measured 8192^3 matmul rate.
#
# Environment knobs: PRECISION (float32), STEPS (10), SHAPES (small,medium,original),
#   BATCHES (128,256,512: per-device rows), HOISTS (on,off), PEAK_TFLOPS, PYTHON, FIXTURES (on|off),
#   VARIANTS: TrainConfig overrides to compare, ';' between variants, spaces between one variant's
#   KEY=VALUE items, an empty variant = the config as it is; (b) runs once per variant, e.g.
#   VARIANTS='; scan_unroll=20; matmul_precision=bfloat16' (default: the empty variant only),
#   timeouts in seconds FIXTURE_TIMEOUT (90) and SHAPE_TIMEOUTS (small:150,medium:100,original:140),
#   each per shape and variant. EMBED_UNROLLS (off by default), e.g. '1 20': (d) embedding tokens/s
#   (benchmarks/embed.py, small and original shapes; --smoke: small, 64 sentences) once per
#   ElmoEmbedder scan_unroll value, each under EMBED_TIMEOUT (120).
#
# Python: $PYTHON, else .venv/bin/python when it imports jax, else python3. If jax sees no GPU
# (full mode), the project is installed with jax[cuda12]: `pip install --no-index --find-links
# .whl -e . jax[cuda12]` when a .whl/ wheel folder is there (the device machine has no internet),
# else from the index. If the project's dependencies are missing (the H200 image has jax, flax,
# optax, orbax, h5py but no `datasets`), the wheels in .whl/ are installed with --no-deps into
# /tmp/site (or, without .whl/, `pip install -e .`). The repo root goes on PYTHONPATH.
#
# Staging (`--prepare`, run here where pip reaches PyPI): copies ../shared/fixtures/bilm-tf to
# .device/fixtures/bilm-tf (the ../shared beside a checkout does not travel), downloads
# CPython 3.12 manylinux wheels of datasets, dill, multiprocess (the versions of this venv) plus
# any NAME==VERSION given into .whl/, and adds /.device/ and /.whl/ to .git/info/exclude. Then:
#   run(command="bash benchmarks/device_check.sh", carry=[".whl", ".device"], timeout_s=540)
set -uo pipefail
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.." || exit 2
REPO=$PWD
MODE=full
case "${1:-}" in
  --smoke) MODE=smoke; shift ;;
  --prepare) MODE=prepare; shift ;;
  "" ) ;;
  -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 0 ;;
  *) echo "usage: $0 [--smoke | --prepare [NAME==VERSION ...]]" >&2; exit 2 ;;
esac

pick_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  if [ -x .venv/bin/python ] && .venv/bin/python -c 'import jax' >/dev/null 2>&1; then echo "$REPO/.venv/bin/python"; return; fi
  command -v python3 || command -v python
}
PY=$(pick_python)

# ------------------------------------------------------------------ --prepare (here, not there)
if [ "$MODE" = prepare ]; then
  exclude=$(git rev-parse --git-path info/exclude) || exit 2
  mkdir -p "$(dirname "$exclude")"
  for p in /.device/ /.whl/; do grep -qxF "$p" "$exclude" 2>/dev/null || echo "$p" >>"$exclude"; done
  src="$REPO/../shared/fixtures/bilm-tf"
  if [ -d "$src" ]; then
    rm -rf .device/fixtures/bilm-tf && mkdir -p .device/fixtures
    cp -r --no-preserve=mode "$src" .device/fixtures/bilm-tf && echo "staged fixtures: .device/fixtures/bilm-tf"
  else
    echo "note: $src not found; the fixture check will be skipped there"
  fi
  vers=$("$PY" - <<'EOF'
from importlib.metadata import version
print(" ".join(f"{n}=={version(n)}" for n in ("datasets", "dill", "multiprocess")))
EOF
) || exit 2
  mkdir -p .whl
  # shellcheck disable=SC2086
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $vers "$@" || exit 1
  ls -1 .whl
  du -sh .whl .device 2>/dev/null
  echo 'then: run(command="bash benchmarks/device_check.sh", carry=[".whl", ".device"], timeout_s=540)'
  exit 0
fi

# ------------------------------------------------------------------ the check
main() {
  local t_start=$SECONDS status=0
  echo "== device_check ($MODE) $(date -u +%FT%TZ) on $(hostname), python: $PY"
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

  # --- environment
  if [ "$MODE" = full ] && ! "$PY" -c 'import jax; jax.devices("gpu")' >/dev/null 2>&1; then
    echo "jax sees no GPU: installing the project with jax[cuda12]"
    if [ -d .whl ]; then
      timeout 300 "$PY" -m pip install -q --no-index --find-links .whl -e . "jax[cuda12]" || status=1
    else
      timeout 300 "$PY" -m pip install -q -e . "jax[cuda12]" || status=1
    fi
  fi
  if ! "$PY" -c 'import datasets, flax, optax, orbax.checkpoint, h5py, tqdm' >/dev/null 2>&1; then
    if [ -d .whl ] && compgen -G ".whl/*.whl" >/dev/null; then
      echo "installing .whl/*.whl into /tmp/site (--no-deps)"
      timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || status=1
      export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    else
      echo "installing the project's dependencies (pip install -e .)"
      timeout 300 "$PY" -m pip install -q -e . || status=1
    fi
  fi
  export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
  "$PY" -c 'import jax, datasets; print("jax", jax.__version__, jax.devices(), "| datasets", datasets.__version__)' \
    || { echo "FATAL: the project cannot be imported"; return 1; }

  local precision=${PRECISION:-float32} steps shapes batches hoists peak jsonl
  if [ "$MODE" = smoke ]; then
    steps=1 shapes=tiny batches=4 hoists=on,off
  else
    steps=${STEPS:-10} shapes=${SHAPES:-small,medium,original} batches=${BATCHES:-128,256,512} hoists=${HOISTS:-on,off}
  fi
  if [ -n "${PEAK_TFLOPS:-}" ]; then peak=(--peak-tflops "$PEAK_TFLOPS")
  elif [ "$MODE" = full ] && [ "$precision" = bfloat16 ]; then peak=(--peak-tflops 989.5)
  elif [ "$MODE" = full ]; then peak=(--peak-tflops 494.7)
  else peak=()  # smoke: the measured matmul peak of this machine
  fi
  jsonl=${OUT:-/tmp}/train.jsonl
  rm -f "$jsonl"

  # --- (a) fixture embeddings
  local rc=0
  if [ "${FIXTURES:-on}" = off ]; then
    echo; echo "== (a) skipped (FIXTURES=off)"
  else
    echo; echo "== (a) bilm-tf fixture embeddings, max |diff| to lm_embeddings_*.hdf5"
    timeout -k 10 "${FIXTURE_TIMEOUT:-90}" "$PY" benchmarks/fixture_check.py
    rc=$?
    [ $rc = 124 ] && echo "(a) TIMED OUT"
    [ $rc = 1 ] && status=1
  fi

  # --- (b) train throughput and MFU, one process per shape, each bounded
  echo; echo "== (b) train step: tokens/s and MFU ($precision, $steps timed steps, peak ${peak[*]:-measured})"
  local first=1 shape limit variant item
  local -a variants sets items
  IFS=';' read -r -a variants <<<"${VARIANTS:-}"
  [ ${#variants[@]} = 0 ] && variants=("")
  for variant in "${variants[@]}"; do
    sets=()
    read -r -a items <<<"$variant"
    for item in "${items[@]}"; do sets+=(--set "$item"); done
    [ ${#variants[@]} -gt 1 ] && echo "-- variant: ${items[*]:-(the config as it is)}"
    for shape in ${shapes//,/ }; do
      limit=$(echo "${SHAPE_TIMEOUTS:-small:150,medium:100,original:140}" | tr ',' '\n' | sed -n "s/^$shape://p")
      [ "$MODE" = smoke ] && limit=240
      local header=()
      [ $first = 1 ] || header=(--one)  # header (jax, peak, legend) once; --one prints table lines only
      timeout -k 10 "${limit:-120}" "$PY" benchmarks/train.py "${header[@]}" --shapes "$shape" --batch-sizes "$batches" \
        --hoist "$hoists" --remat on --precision "$precision" --steps "$steps" "${peak[@]}" --no-data --jsonl "$jsonl" \
        "${sets[@]}"
      rc=$?
      [ $rc = 124 ] && echo "$shape: TIMED OUT after ${limit:-120} s (lines above are complete)"
      [ $rc != 0 ] && [ $rc != 124 ] && { echo "$shape: train.py exit $rc"; status=1; }
      first=0
    done
  done

  # --- (c) compile seconds and memory
  echo; echo "== (c) compile seconds and memory per line"
  "$PY" - "$jsonl" <<'EOF'
import json, sys
try:
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
except FileNotFoundError:
    rows = []
print(f"{'shape':8s} {'rows':>5s} {'hoist':>5s} {'variant':>24s} {'compile_s':>9s} {'temp_GB':>8s} {'args_GB':>8s} {'out_GB':>7s} "
      f"{'alias_GB':>8s} {'peak_in_use_GB':>14s} {'tokens/s':>9s} {'MFU':>6s}")
for r in rows:
    m = r.get("memory_analysis") or {}
    g = lambda k: m.get(k, float("nan")) / 1e9
    peak = r.get("peak_bytes_in_use")
    variant = " ".join(r.get("sets") or []) or "-"
    print(f"{r['shape']:8s} {r['rows']:5d} {'on' if r['hoist'] else 'off':>5s} {variant:>24s} {r['compile_s']:9.1f} {g('temp'):8.2f} "
          f"{g('argument'):8.2f} {g('output'):7.2f} {g('alias'):8.2f} "
          f"{(peak / 1e9 if peak else float('nan')):14.2f} {r['tokens_per_s']:9.0f} {r['mfu']:6.1%}")
print(f"{len(rows)} lines; peak_in_use is the process's high-water mark (one process per shape).")
EOF
  # --- (d) optional: embedding tokens/s per scan_unroll (ElmoEmbedder)
  if [ -n "${EMBED_UNROLLS:-}" ]; then
    echo; echo "== (d) embedding tokens/s by scan_unroll: ${EMBED_UNROLLS}"
    local unroll
    local -a embed_args=(--shapes small,original --repeats 2)
    [ "$MODE" = smoke ] && embed_args=(--shapes small --sentences 64 --repeats 1)
    for unroll in ${EMBED_UNROLLS}; do
      echo "-- scan_unroll $unroll"
      timeout -k 10 "${EMBED_TIMEOUT:-120}" "$PY" benchmarks/embed.py "${embed_args[@]}" --scan-unroll "$unroll"
      rc=$?
      [ $rc = 124 ] && echo "(d) scan_unroll $unroll: TIMED OUT"
      [ $rc != 0 ] && [ $rc != 124 ] && { echo "(d) embed.py exit $rc"; status=1; }
    done
  fi

  echo; echo "== done in $((SECONDS - t_start)) s, status $status"
  return $status
}

if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  main 2>&1 | tee "$OUT/device_check.txt"
else
  main 2>&1
fi
