#!/usr/bin/env bash
# Train a LoRA bank for the embedded Real-ESRGAN x4plus backbone, then its router embeddings.
#
#   bash tools/train_realesrgan_bank.sh [BANK_DIR]     (default: runs/realesrgan/embedded-realesrgan)
#
# Same trainer, same synthesis (every kind of uir_lora.degrade) and same router fit as the FFDNet bank
# (tools/train_bank.sh); only the backbone differs. Made for one GPU: each LoRA gets STEPS steps on
# CROP px crops (the network returns them ×4, area-downscaled back). Settings come from the environment:
#   STEPS=1500 CROP=128 BATCH=16 RANK=8 KINDS="noise jpeg ..." ROUTER=1 THREADS=4
#   STEPS=0 MINUTES=7: a wall-clock budget per LoRA instead of a step count
#   TRAIN_ARGS="--validation-photos 2 --validation-side 128": extra train-lora options (a CPU cannot score
#   Real-ESRGAN on all 9 validation photos after each LoRA in reasonable time)
# CPU smoke test (a few steps, one kind, a tiny router fit; minutes on two cores):
#   STEPS=2 CROP=32 BATCH=2 RANK=2 KINDS=noise ROUTER_ARGS="--per-photo 1 --per-render 0 --mixtures 0
#   --outliers 0 --steps 5" bash tools/train_realesrgan_bank.sh /tmp/realesrgan-smoke
# The CPU bank of docs/benchmarks.md ("Backbones side by side"), at nice 19 beside other jobs:
#   STEPS=0 MINUTES=7 CROP=48 BATCH=2 RANK=8 THREADS=2 KINDS="defocus_blur low_resolution motion_blur noise jpeg"
#   ROUTER=0 TRAIN_ARGS="--validation-photos 2 --validation-side 128" bash tools/train_realesrgan_bank.sh
# Needs the [train] and [realesrgan] extras: pip install -e '.[train,realesrgan]'
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
BANK="$(realpath -m "${1:-$REPO/runs/realesrgan/embedded-realesrgan}")"
RUNS="$(dirname "$BANK")/logs"
DATA="${DATA:-$REPO/data}"
STEPS="${STEPS:-1500}" CROP="${CROP:-128}" BATCH="${BATCH:-16}" RANK="${RANK:-8}" THREADS="${THREADS:-4}"
KINDS="${KINDS:-noise poisson_noise motion_blur defocus_blur jpeg low_light haze rain snow low_resolution raindrop color_cast clean}"
ROUTER="${ROUTER:-1}" ROUTER_ARGS="${ROUTER_ARGS:-}" MINUTES="${MINUTES:-7}" TRAIN_ARGS="${TRAIN_ARGS:-}"
mkdir -p "$RUNS" "$DATA"
cd "$REPO"
export UIR_LORA_CODE="git $(git rev-parse --short HEAD)" PYTHONUNBUFFERED=1
# convert the backbone once (sha256-checked) before any training run
python tools/convert_realesrgan.py
echo "$(date -u +%H:%M) training $(echo $KINDS | wc -w) LoRAs (${STEPS} steps or ${MINUTES} min, crop ${CROP}, rank ${RANK}) into $BANK"
for kind in $KINDS; do
  # --frame-side: degrade crops as windows of a 256 px photo (as the FFDNet bank); never below the crop
  # shellcheck disable=SC2086 - TRAIN_ARGS is a list of options
  python -m uir_lora.lab.cli train-lora --backbone embedded-realesrgan --degradation "$kind" --bank "$BANK" \
    --steps "$STEPS" --minutes "$MINUTES" --crop "$CROP" --batch "$BATCH" --rank "$RANK" --seed 0 --threads "$THREADS" \
    --frame-side "$(( CROP > 256 ? CROP : 256 ))" --data-dir "$DATA" --replace $TRAIN_ARGS 2>&1 | tee -a "$RUNS/$kind.log"
  echo "$(date -u +%H:%M) done $kind"
done
if [ "$ROUTER" = 1 ]; then
  # shellcheck disable=SC2086 - ROUTER_ARGS is a list of options
  python -m uir_lora.lab.cli train-router --bank "$BANK" $ROUTER_ARGS 2>&1 | tee -a "$RUNS/router.log"
fi
echo "$(date -u +%H:%M) bank complete: $BANK"
