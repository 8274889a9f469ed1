#!/usr/bin/env bash
# The global stage of the shipped bank: a global adapter for each whole-image kind, then those kinds' LoRAs
# trained afresh through their adapters (the other LoRAs frozen), then adopted into the bank.
#
#   bash tools/train_global_stage.sh [BANK_DIR] [ADAPTER_MINUTES] [LORA_MINUTES] [KIND ...]
#       (defaults: lora_bank/embedded-ffdnet, 9, 26, low_light color_cast haze: about 45 minutes on two CPU
#       cores; runs in runs/global/). The haze adapter also undoes the scattering model (--dehaze); the
#       low-light adapter first lifts the photo's highlights to a fixed level (--anchor).
#
# The shipped haze adapter was then trained on from its file with each photo's best omega taught (--init ...
# --omega-target: the command is in docs/engine.md).
#
# Then measure on the independent check set before committing the bank:
#   python benchmarks/wild.py --jobs 2 --doc docs/benchmarks.md
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
BANK="$(realpath -m "${1:-$REPO/lora_bank/embedded-ffdnet}")"
ADAPTER_MINUTES="${2:-9}"
LORA_MINUTES="${3:-26}"
shift $(( $# < 3 ? $# : 3 ))
if [ $# -gt 0 ]; then KINDS=("$@"); else KINDS=(low_light color_cast haze); fi
RUNS="$REPO/runs/global"
PHOTOS="$REPO/data/train_photos"
cd "$REPO"
mkdir -p "$RUNS/adapters"
for shipped in "$BANK"/*.global.safetensors; do  # the bank's other adapters, frozen, for the mixtures
  if [ -e "$shipped" ]; then cp "$shipped" "$RUNS/adapters/$(basename "$shipped" .global.safetensors).safetensors"; fi
done
[ -d "$PHOTOS" ] || python tools/pack_training_photos.py
for kind in "${KINDS[@]}"; do  # one thread each, side by side
  extra=()
  [ "$kind" = haze ] && extra=(--dehaze)
  [ "$kind" = low_light ] && extra=(--anchor)
  python -m uir_lora.lab.train.global_stage --kind "$kind" --photos "$PHOTOS" --minutes "$ADAPTER_MINUTES" \
    --threads 1 "${extra[@]}" --out "$RUNS/adapters/$kind.safetensors" > "$RUNS/adapters/$kind.log" 2>&1 &
done
wait
rm -rf "$RUNS/bank"
# noise level: a brightened dark photo carries amplified sensor noise, a dehazed one some; a colour cast none.
# --bf16: the shipped global-stage LoRAs were trained so (their corrections are large beside bf16's rounding);
# the joint trainer itself defaults to float32.
python -m uir_lora.lab.train.joint --out "$RUNS/bank" --init "$BANK" --photos "$PHOTOS" --minutes "$LORA_MINUTES" \
  --batch 8 --crop 128 --global-stage "$RUNS/adapters" --train-kinds "${KINDS[@]}" --from-scratch \
  --sigma low_light=15 haze=5 --bf16 > "$RUNS/joint.log" 2>&1
python tools/adopt_loras.py "$RUNS/bank" "$BANK" "${KINDS[@]}" --force
python tools/validate_bank.py "$BANK" "${KINDS[@]}"   # the fixed validation split, through the global stage
