#!/usr/bin/env bash
# Core's "Load Upscale Model" wired into the UIR Backbone Loader, in a real ComfyUI (tier 3).
#
#   COMFY_HOME=/work/comfy PYTHON=<a python with spandrel and this pack's requirements> \
#     bash tools/comfyui_e2e_upscale_model.sh OUT_DIR
#
# Writes a tiny random ESRGAN ×4 (spandrel recognises it as Real-ESRGAN's architecture) into
# models/upscale_models and a bank of random LoRAs made for exactly those weights into models/uir_lora,
# then runs one API prompt through ../shared/tools/comfyui-e2e.sh (set E2E to another copy):
#   LoadImage -> UpscaleModelLoader -> UIR_BackboneLoader(upscale_model) -> UIR_LoraBankLoader
#   -> UIR_DegradationEstimator -> UIR_LoraComposer -> UIR_Restore -> SaveImage
#   and the same UPSCALE_MODEL through core's ImageUpscaleWithModel (after the restore) -> SaveImage.
# Then checks, outside ComfyUI: the restored image equals `python -m uir_lora.cli restore` with the same
# model file and bank (one 8-bit level at most), and core's upscale equals the plain model's ×4 output,
# so the LoRAs went on the Backbone Loader's copy, never on the model core's nodes share.
set -euo pipefail
OUT=$(realpath -m "${1:?usage: comfyui_e2e_upscale_model.sh OUT_DIR}")
PACK=$(cd "$(dirname "$0")/.." && pwd)
E2E=${E2E:-$PACK/../shared/tools/comfyui-e2e.sh}
COMFY_HOME=${COMFY_HOME:?set COMFY_HOME}
PY=${PYTHON:-python}
MODEL=uir_e2e_tiny_x4.safetensors
BANK=uir-e2e-tiny-esrgan
INPUT="$PACK/workflows/inputs/chelsea_noise25.png"
mkdir -p "$OUT"
cd "$PACK"

"$PY" - "$OUT" "$MODEL" "$BANK" "$(basename "$INPUT")" <<'EOF'
import json
import shutil
import sys
from pathlib import Path

from uir_lora.backbones.spandrel_backbone import SpandrelBackbone
from uir_lora.lab.testing import spandrel_tiny as tiny
from uir_lora.lab.testing.banks import make_random_bank
from uir_lora.router.encoder import DegradationEncoder

out, model_name, bank_name, image_name = Path(sys.argv[1]), *sys.argv[2:]
model = tiny.write_safetensors(tiny.esrgan(4), out / model_name)
shutil.rmtree(out / "banks", ignore_errors=True)
make_random_bank(out / "banks", SpandrelBackbone.from_file(model), ("noise", "jpeg"),
                 dim=DegradationEncoder().dim, bank_name=bank_name)
prompt = {
    "1": {"class_type": "LoadImage", "inputs": {"image": image_name}},
    "2": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": model_name}},
    "3": {"class_type": "UIR_BackboneLoader", "inputs": {"backbone": "embedded-ffdnet (built in)", "device": "cpu",
                                                          "dtype": "fp32", "upscale_model": ["2", 0]}},
    "4": {"class_type": "UIR_LoraBankLoader", "inputs": {"backbone": ["3", 0], "bank": bank_name}},
    "5": {"class_type": "UIR_DegradationEstimator", "inputs": {"image": ["1", 0], "bank": ["4", 0], "top_k": 0,
                                                                "temperature": 0.0, "normalisation": "bank default"}},
    "6": {"class_type": "UIR_LoraComposer", "inputs": {"bank": ["4", 0], "routing": ["5", 0], "mode": "auto",
                                                        "weights": "", "fused": True}},
    "7": {"class_type": "UIR_Restore", "inputs": {"image": ["1", 0], "backbone": ["3", 0], "composition": ["6", 0],
                                                   "strength": 1.0, "tile": 512, "seed": 0, "spatial": False}},
    "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "uir_e2e/restored"}},
    # ImageBlend at factor 0 returns image1 exactly; taking the restored image as image2 makes core's upscale
    # run after the LoRAs were attached and used
    "11": {"class_type": "ImageBlend", "inputs": {"image1": ["1", 0], "image2": ["7", 0], "blend_factor": 0.0,
                                                   "blend_mode": "normal"}},
    "9": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["2", 0], "image": ["11", 0]}},
    "10": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": "uir_e2e/upscaled"}},
}
(out / "workflow_api.json").write_text(json.dumps(prompt, indent=1))
EOF

# the bank goes where the pack looks for users' banks: models/uir_lora/<bank>/
mkdir -p "$COMFY_HOME/ComfyUI/models/uir_lora"
rm -rf "${COMFY_HOME:?}/ComfyUI/models/uir_lora/$BANK" "$COMFY_HOME/ComfyUI/output/uir_e2e"
cp -r "$OUT/banks/$BANK" "$COMFY_HOME/ComfyUI/models/uir_lora/"
COMFY_HOME="$COMFY_HOME" bash "$E2E" --input "$INPUT" --model "upscale_models=$OUT/$MODEL" \
  "$PACK" "$OUT/workflow_api.json" 2>&1 | tee "$OUT/e2e.log"
restored=$(ls "$COMFY_HOME"/ComfyUI/output/uir_e2e/restored_*.png | tail -1)
upscaled=$(ls "$COMFY_HOME"/ComfyUI/output/uir_e2e/upscaled_*.png | tail -1)
cp "$restored" "$OUT/comfyui_restored.png"
cp "$upscaled" "$OUT/comfyui_upscaled.png"

"$PY" -m uir_lora.cli restore "$INPUT" -o "$OUT/cli_restored.png" --backbone spandrel --backbone-path "$OUT/$MODEL" \
  --bank "$BANK" --bank-dir "$OUT/banks" --overwrite
"$PY" - "$OUT" "$MODEL" "$INPUT" <<'EOF'
import sys
from pathlib import Path

import torch

from uir_lora.backbones.spandrel_backbone import descriptor_from_state_dict, read_state_dict
from uir_lora.images import load_image

out, model_name, source = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
image = load_image(source)
with torch.no_grad():
    plain = descriptor_from_state_dict(read_state_dict(out / model_name), model_name)(image).clamp(0, 1)
checks = {
    "ComfyUI restore vs the CLI": (load_image(out / "comfyui_restored.png"), load_image(out / "cli_restored.png")),
    "core upscale vs the plain model": (load_image(out / "comfyui_upscaled.png"), (plain * 255).round() / 255),
}
failed = False
for name, (a, b) in checks.items():
    same_shape = a.shape == b.shape
    levels = float((a - b).abs().max() * 255) if same_shape else float("inf")
    ok = same_shape and levels <= 1.0 + 1e-3  # rounding to 8 bits on either side
    failed |= not ok
    print(f"[e2e-upscale] {name}: shapes {tuple(a.shape)} / {tuple(b.shape)}, max difference {levels:.1f} "
          f"levels of 255: {'ok' if ok else 'FAIL'}")
restored = load_image(out / "comfyui_restored.png")
moved = float((restored - image).abs().mean() * 255)
print(f"[e2e-upscale] the restored image differs from its input by {moved:.2f} levels on average")
failed |= restored.shape != image.shape or moved == 0.0
sys.exit(1 if failed else 0)
EOF
echo "[e2e-upscale] ok"
