#!/usr/bin/env bash
# The encoder's training on the lent device machine, from the bundle of tools/gpu/encoder_bundle.py.
#   device run, carry [".gpu"]:  bash tools/gpu/encoder_on_device.sh     (results and log in $OUT)
# Smoke-test here:  OUT=/tmp/enc STEPS=3 BATCH=4 CROP=96 WORKERS=1 BF16= bash tools/gpu/encoder_on_device.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -d .gpu/site ] || { echo "no .gpu/ bundle: run python tools/gpu/encoder_bundle.py here first" >&2; exit 2; }
# The scripts call `python`; the device has only python3, in a virtual environment. A wrapper that runs
# the interpreter by its own path keeps the environment (a symbolic link elsewhere loses it) and cannot
# loop back through a launcher that itself calls `python` (as pyenv's shims do).
PYTHON3="$(python3 -c 'import sys; print(sys.executable)')"
mkdir -p /tmp/bin
rm -f /tmp/bin/python  # never write through a link left there: it would overwrite the interpreter it names
printf '#!/bin/sh\nexec "%s" "$@"\n' "$PYTHON3" > /tmp/bin/python
chmod +x /tmp/bin/python
export PATH="/tmp/bin:$PATH" PYTHONUNBUFFERED=1
if ! python3 -c "import kornia" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl
fi
export PYTHONPATH="$PWD/.gpu/site:$PWD:/tmp/site"
# MINUTES, BATCH, CROP, WORKERS and the output folder's default are train_encoder_gpu.sh's own
bash tools/train_encoder_gpu.sh "${OUT:-}" .gpu/scenes_train
