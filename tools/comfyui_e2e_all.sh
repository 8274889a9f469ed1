#!/usr/bin/env bash
# Run every shipped workflow through one real ComfyUI server (tier 3): the UI-format ones converted
# by the real frontend, then their API twins; check that every UIR_ node is in /object_info; take a
# screenshot of one workflow and of Workflow > Browse Templates.
#
#   COMFY_HOME=/work/comfy bash tools/comfyui_e2e_all.sh OUT_DIR
#
# Uses ../shared/tools/comfyui-e2e.sh (set E2E to another copy) for the first workflow with
# --keep-server, then its companions comfy_ui_probe.js and comfy_submit.py for the rest.
# The server runs under nice -n 10; the browser does not (it times out when starved).
# COMFY_PORT (default 8231) and COMFY_EXTRA_ARGS are passed through (e.g. an
# --extra-model-paths-config that adds a models/uir_lora folder).
set -euo pipefail
OUT=$(realpath -m "${1:?usage: comfyui_e2e_all.sh OUT_DIR}")
PACK=$(cd "$(dirname "$0")/.." && pwd)
E2E=${E2E:-$PACK/../shared/tools/comfyui-e2e.sh}
TOOLS=$(cd "$(dirname "$E2E")" && pwd)
COMFY_HOME=${COMFY_HOME:?set COMFY_HOME}
export COMFY_PORT=${COMFY_PORT:-8231}
PY="$COMFY_HOME/venv/bin/python"
mkdir -p "$OUT"
first="$PACK/workflows/Automatic restore - the router picks the LoRAs.json"
t0=$(date +%s)
nice -n 10 bash "$E2E" --keep-server --screenshot "$OUT/workflow.png" --templates-shot "$OUT/templates.png" \
  "$PACK" "$first" > "$OUT/first.log" 2>&1 || first_rc=$?
pid=$(grep -o "PID [0-9]* (stop" "$OUT/first.log" | tail -1 | grep -o "[0-9]*" || true)
[ -n "$pid" ] && trap 'kill "$pid" 2>/dev/null || true' EXIT  # only the server this run started
grep -v "executing" "$OUT/first.log"
[ "${first_rc:-0}" = 0 ] || { echo "[all] FAIL first workflow (rc $first_rc)"; exit 1; }
echo "[all] first workflow incl. server start: $(( $(date +%s) - t0 )) s"
curl -s "http://127.0.0.1:$COMFY_PORT/object_info" > "$OUT/object_info.json"
"$PY" - "$OUT/object_info.json" <<'EOF'
import json, sys
info = json.load(open(sys.argv[1]))
ours = sorted(k for k in info if k.startswith("UIR_"))
print(f"[all] /object_info: {len(info)} nodes, {len(ours)} UIR_: {', '.join(ours)}")
print("[all] python_module:", sorted({info[k]['python_module'] for k in ours}))
EOF
status=0
for wf in "$PACK"/workflows/*.json "$PACK"/workflows/api/*.json; do
  [ "$wf" = "$first" ] && continue
  api="$wf"; t=$(date +%s); log="$OUT/$(basename "$(dirname "$wf")")_$(basename "$wf" .json).log"
  if [ "$(dirname "$wf")" = "$PACK/workflows" ]; then  # UI format: convert with the real frontend
    api="$OUT/$(basename "$wf" .json).api.json"
    for try in 1 2 3; do  # the probe waits 60 s for the app: too short on a loaded 2-core machine
      NODE_PATH="$COMFY_HOME/pw/node_modules" timeout 240 node "$TOOLS/comfy_ui_probe.js" \
        --server "127.0.0.1:$COMFY_PORT" --workflow "$wf" --api-out "$api" >> "$log" 2>&1 && break
      rm -f "$api"; echo "[all] frontend conversion try $try failed: $wf"
    done
    [ -f "$api" ] || { echo "[all] FAIL convert $wf"; status=1; continue; }
  fi
  if "$PY" "$TOOLS/comfy_submit.py" "$api" --server "127.0.0.1:$COMFY_PORT" --timeout 600 \
       --output-dir "$COMFY_HOME/ComfyUI/output" >> "$log" 2>&1; then
    echo "[all] ok   $(( $(date +%s) - t )) s  ${wf#"$PACK"/}"
  elif grep -q "backbone file missing" "$log"; then  # e.g. SD-Turbo: weights the user downloads
    echo "[all] skip ${wf#"$PACK"/}: $(grep -o "backbone file missing[^\"]*" "$log" | head -1)"
  else
    echo "[all] FAIL ${wf#"$PACK"/}: see $log"; status=1
  fi
done
exit $status
