#!/usr/bin/env bash
# Train the shipped bank lora_bank/embedded-ffdnet (13 LoRAs) on the CPU, two runs side by side.
#
#   bash tools/train_bank.sh [BANK_DIR]        (default: lora_bank/embedded-ffdnet; logs in runs/bank/)
#
# The code that trains is a snapshot of the current git commit (git archive HEAD), so edits made to
# the working tree while the bank trains cannot change it mid-way; the commit is recorded in every
# LoRA's provenance. Per kind: minutes of wall-clock budget and crop size (see docs/training.md).
# Needs the [train] extra: pip install -e .[train]
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
BANK="$(realpath -m "${1:-$REPO/lora_bank/embedded-ffdnet}")"
RUNS="$REPO/runs/bank"
DATA="$REPO/data"
PARALLEL="${PARALLEL:-2}"
COMMIT="$(git -C "$REPO" rev-parse --short HEAD)"
SNAP="$RUNS/code-$COMMIT"
mkdir -p "$RUNS" "$DATA"
if [ ! -d "$SNAP" ]; then
  mkdir -p "$SNAP.tmp" && git -C "$REPO" archive HEAD uir_lora lora_bank/backbones | tar -x -C "$SNAP.tmp"
  mv "$SNAP.tmp" "$SNAP"
fi
export PYTHONPATH="$SNAP" UIR_LORA_CODE="git $COMMIT" OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
# build the crop cache once, before the parallel runs
python -c "from uir_lora.lab.train.data import load_training_crops as t, load_validation_images as v; \
from pathlib import Path; t(Path('$DATA')); v(Path('$DATA'))"

# float32 throughout (see docs/training.md: bf16-trained LoRAs hurt in float32).
# kind minutes crop: the slow-to-learn kinds (JPEG, blur, resolution) get more time; longest first.
# motion_blur: a short run on 80 px crops gained nothing, so it gets the longest run, at 64 px
# (docs/training.md, "What we tried").
JOBS="jpeg 9 64
motion_blur 24 64
defocus_blur 9 80
low_resolution 9 64
noise 6 64
poisson_noise 6 64
low_light 6 64
haze 6 64
rain 6 64
snow 6 64
raindrop 6 64
color_cast 5 64
clean 3 64"

run_one() {
  local kind=$1 minutes=$2 crop=$3
  for attempt in 1 2; do
    if python -m uir_lora.lab.cli train-lora --degradation "$kind" --bank "$BANK" --minutes "$minutes" \
         --crop "$crop" --batch 16 --rank 16 --seed 0 --threads 1 --data-dir "$DATA" --replace \
         >> "$RUNS/$kind.log" 2>&1; then
      echo "$(date -u +%H:%M) done $kind"; return 0
    fi
    echo "$(date -u +%H:%M) $kind failed (attempt $attempt), see $RUNS/$kind.log"; sleep 10
  done
  return 1
}
export -f run_one
export BANK RUNS DATA
echo "$(date -u +%H:%M) training $(echo "$JOBS" | wc -l) LoRAs into $BANK with code $COMMIT"
echo "$JOBS" | xargs -P "$PARALLEL" -L 1 bash -c 'run_one "$@"' _ || { echo "$(date -u +%H:%M) some LoRAs failed"; exit 1; }
echo "$(date -u +%H:%M) bank complete: $BANK"
