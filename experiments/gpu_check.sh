#!/usr/bin/env bash
# The one prepared GPU check: everything no CPU can measure, in at most 8 minutes on one H200.
#
#   experiments/gpu_check.sh [OUT_DIR]          (default: $OUT, else gpu_check_out/)
#   DRY_RUN=1 experiments/gpu_check.sh DIR      (tiny settings on the CPU: the test that keeps
#                                                this script from rotting)
#
# The GPU machine has torch, torchvision, lightning, torchmetrics, scikit-image, scikit-learn,
# scipy, pillow and tqdm but no network: the other dependencies travel as wheels in .whl/
# (`make gpu-wheels` downloads them here), and dynaseg itself runs from the checkout. BSDS500 val
# travels in .gpu_data/BSDS500/data (`make gpu-data`). Each step runs under its own time limit,
# so a slow step cannot eat the others, and writes its log; at the end one summary table
# (summary.md) and an archive of every log and result (gpu_check.tar.gz) are left in OUT_DIR
# (eight files at most come back from the device machine).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=$(mkdir -p "${1:-${OUT:-gpu_check_out}}" && cd "${1:-${OUT:-gpu_check_out}}" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PY=${PYTHON:-python3}
DRY=${DRY_RUN:-0}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/dynaseg_site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/dynaseg_site"
fi
if [ "$DRY" = 1 ]; then
  DEVICE=cpu LIMITS=(120 300 300 300) SMOKE=(--max-side 48)
  BENCH=(--iterations 2 --batch-sizes 1 2 --set-size 32 --max-side 48 --result-rounds 1 --eager-only
    --paper-max-iter 10)
  T1=(dataset.limit=2 dataset.max_side=40 max_iter=3)
  ROOT=${DRY_ROOT:-$("$PY" -c 'from dynaseg.data import sample_root; print(sample_root())')}
else
  DEVICE=cuda LIMITS=(90 150 60 150) SMOKE=()
  BENCH=(--iterations 20 --batch-sizes 1 8 32 64 --set-size 320 --result-rounds 3)
  T1=()
  ROOT=$PWD/.gpu_data/BSDS500/data
fi
: >"$WORK/steps.tsv"

step() {  # step NAME SECONDS COMMAND...: run under a limit, log it, note rc and seconds
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  timeout --kill-after=10 "$limit" "$@" >"$WORK/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" "$limit" >>"$WORK/steps.tsv"
  echo "$name: exit $rc after $((SECONDS - start)) s (limit $limit s)"
}

# 1. CUDA tests and a smoke run of the CLI on the device.
step tests "${LIMITS[0]}" "$PY" -m pytest -q -m cuda tests -p no:cacheprovider
step smoke "${LIMITS[0]}" "$PY" -m dynaseg segment "$("$PY" -c \
  'from dynaseg.data import sample_root; print(sample_root() / "images" / "val" / "3096.jpg")')" \
  --out "$WORK/smoke" --device "$DEVICE" --max-iter 20 --quiet "${SMOKE[@]}"
# 2 and 3. Per-iteration speed (fp32 / TF32 / bf16, eager / compiled), time to a finished
# segmentation (default and paper loop), images per second by batch size.
step bench "${LIMITS[1]}" "$PY" experiments/bench_speed.py --matrix --device "$DEVICE" "${BENCH[@]}"
# 4. Table 1 on BSDS500 val at native size while time remains: our default on every image,
# then the paper's three fitted methods (T = 1000) on as many images as their limit allows.
# Every run is resumable; a run cut off by its limit keeps its records.
if [ -d "$ROOT" ]; then
  trainer=$([ "$DEVICE" = cuda ] && echo gpu || echo cpu)
  for preset in bsd_default bsd_fsf_cnn bsd_scf_cnn bsd_fixed_cnn; do
    limit=$([ "$preset" = bsd_default ] && echo "${LIMITS[3]}" || echo "${LIMITS[2]}")
    if [ "$DRY" = 1 ]; then data=(dataset=sample); else data=("dataset.root=$ROOT" dataset.split=val); fi
    step "table1_$preset" "$limit" "$PY" -m dynaseg.run "+experiment=$preset" "${data[@]}" \
      "trainer=$trainer" "hydra.run.dir=$WORK/table1/$preset" resume=true save_overlays=0 "${T1[@]}"
  done
fi

"$PY" experiments/gpu_summary.py "$WORK" >"$OUT_DIR/summary.md"
cp "$WORK/steps.tsv" "$OUT_DIR/steps.tsv"
tar czf "$OUT_DIR/gpu_check.tar.gz" -C "$WORK" .
cat "$OUT_DIR/summary.md"
