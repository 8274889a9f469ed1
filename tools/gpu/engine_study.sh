#!/usr/bin/env bash
# The engine study on one lent GPU: the bank retrained jointly (composition in the loop, wide and
# independent synthesis, photo-sized crops), run flat and coarse-to-fine, side by side.
#
# Prepare here (CPU), once:
#   PYTHONPATH=. python tools/pack_training_photos.py          # data/train_photos/, data/validation.pt
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl kornia==0.9.0 kornia_rs==0.2.0
#   (data/ and .whl/ are git-ignored; the device tool carries them: carry ["data", ".whl"])
# Run there:   bash tools/gpu/engine_study.sh [MINUTES_PER_ARM]   (results in $OUT, tarred banks)
# Smoke-test here:  UIR_SMOKE=1 OUT=/tmp/study bash tools/gpu/engine_study.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
MINUTES="${1:-3.5}"
OUT="${OUT:-runs/engine_study}"
mkdir -p "$OUT"
PY=python3
if [ -d .whl ] && ! $PY -c "import kornia" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ -n "${UIR_SMOKE:-}" ]; then
  ARGS=(--steps 2 --batch 2 --crop 64 --eval-images 1)
else
  ARGS=(--minutes "$MINUTES" --batch 32 --crop 256)
fi
$PY -c "import torch; print('device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
for coarsest in 0 64; do
  arm="bank_ms${coarsest}"
  rm -rf "runs/$arm"
  $PY -m uir_lora.lab.train.joint --out "runs/$arm" --init lora_bank/embedded-ffdnet --photos data/train_photos \
      --multiscale "$coarsest" "${ARGS[@]}" 2>&1 | tee "$OUT/$arm.log"
  tar -cf "$OUT/$arm.tar" -C runs "$arm"
done
echo "engine study done: $(ls "$OUT")"
