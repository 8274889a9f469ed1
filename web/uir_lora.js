// UIR-LoRA in the ComfyUI frontend (public APIs only):
// - the Degradation Estimator's routing drawn as bars inside the node after each run; its ui dict carries
//   "uir_weights": one {names, similarities, weights, left_out, top_k, temperature, normalisation, unknown} per image
//   (nodes/routing.py: weights_ui);
// - UIR Compare's PSNR/SSIM lines (its ui "text") written on the node, above its image-beside-reference preview;
// - seeds of new UIR nodes start "fixed": one deterministic restore step gains nothing from a new seed per queue;
// - the pack's templates listed in TEMPLATE_ORDER (Workflow > Browse Templates lists them as the server finds them).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const ROW = 18;
const HEAD = 22;
const MIN_BAR = 3; // px: a non-zero value always shows a bar
const COLOURS = { bar: "#4696e6", kept: "#f0a028", warn: "#dc3c3c", text: "#e6e6e6", dim: "#9a9a9a", neg: "#6a6a6a" };
const SEEDED = new Set(["UIR_Restore", "UIR_SyntheticDegrade"]);
// the order of workflows/*.json in Browse Templates: working ones first (tools/make_workflows.py writes them;
// tests/test_workflows.py checks this list against it)
const TEMPLATE_ORDER = [
  "Automatic restore - the router picks the LoRAs",
  "Damage, restore, measure - PSNR and SSIM",
  "Manual blend - type the LoRA weights",
  "SD-Turbo backbone - bring your own weights and bank",
];

// two decimals, never "-0.00"
export function plain(value) {
  return (Math.round(value * 100) / 100 + 0).toFixed(2);
}

// bar length in px: proportional to value / scale, at least MIN_BAR for a value that prints as non-zero
export function barWidth(value, scale, width) {
  if (!(scale > 0) || Math.abs(value) < 0.005) return 0;
  return Math.max(MIN_BAR, Math.round((width * Math.min(Math.abs(value), scale)) / scale));
}

function rowsOf(entry) {
  const leftOut = new Set(entry.left_out || []); // kept by the router, not applied by the restore
  const rows = entry.names.map((name, i) => ({
    name, sim: entry.similarities[i], weight: entry.weights[i], left: leftOut.has(name),
  }));
  return rows.sort((a, b) => b.weight - a.weight || b.sim - a.sim);
}

function chartHeight(data) {
  if (!data || !data.length) return 0;
  const leftOut = (data[0].left_out || []).length ? ROW : 0;
  return HEAD + ROW * data[0].names.length + (data[0].unknown ? ROW : 0) + leftOut + (data.length > 1 ? ROW : 0) + 6;
}

function drawChart(ctx, data, width, y) {
  const entry = data[0];
  const left = 10, labelW = 100, valueW = 84;
  const barW = Math.max(20, width - 2 * left - labelW - valueW);
  // similarities are small numbers (cosines near 0.1 to 0.4): scaled to the largest one so every bar reads
  const simScale = Math.max(...entry.similarities.map(Math.abs), 1e-6);
  ctx.save();
  ctx.fillStyle = "rgba(0,0,0,0.25)";
  ctx.fillRect(left - 4, y, width - 2 * left + 8, chartHeight(data) - 2);
  ctx.font = "11px sans-serif";
  ctx.textBaseline = "middle";
  ctx.fillStyle = COLOURS.dim;
  ctx.fillText(`weight (orange) / similarity (blue) · top-${entry.top_k} · ${entry.normalisation} T=${entry.temperature}`,
    left, y + HEAD / 2, width - 2 * left - valueW);
  ctx.textAlign = "right";
  ctx.fillText("weight   sim", width - left, y + HEAD / 2);
  ctx.textAlign = "left";
  rowsOf(entry).forEach((row, i) => {
    const ry = y + HEAD + i * ROW;
    const kept = row.weight > 0;
    const applied = kept && !row.left;
    ctx.fillStyle = applied ? COLOURS.text : COLOURS.dim;
    ctx.font = applied ? "bold 12px sans-serif" : "12px sans-serif";
    ctx.fillText((applied ? "\u2605 " : "  ") + row.name, left, ry + ROW / 2, labelW - 4);
    ctx.fillStyle = row.sim >= 0 ? COLOURS.bar : COLOURS.neg; // a negative similarity: grey, same length rule
    ctx.fillRect(left + labelW, ry + ROW - 7, barWidth(row.sim, simScale, barW), 4);
    if (kept) {
      ctx.fillStyle = applied ? COLOURS.kept : COLOURS.dim;
      ctx.fillRect(left + labelW, ry + 3, barWidth(row.weight, 1, barW), ROW - 11);
    }
    ctx.font = "11px monospace";
    ctx.textAlign = "right";
    ctx.fillStyle = applied ? COLOURS.kept : COLOURS.dim;
    ctx.fillText(plain(row.weight), width - left - 40, ry + ROW / 2);
    ctx.fillStyle = row.sim >= 0 ? COLOURS.bar : COLOURS.dim;
    ctx.fillText(plain(row.sim), width - left, ry + ROW / 2);
    ctx.textAlign = "left";
  });
  let ny = y + HEAD + entry.names.length * ROW;
  if (entry.unknown) {
    ctx.fillStyle = COLOURS.warn;
    ctx.font = "bold 12px sans-serif";
    ctx.fillText("\u26a0 unknown degradation: no LoRA fits well", left, ny + ROW / 2);
    ny += ROW;
  }
  if ((entry.left_out || []).length) {
    ctx.fillStyle = COLOURS.dim;
    ctx.font = "11px sans-serif";
    ctx.fillText(`grey weight: too weak beside the first kind; the restore leaves out ${entry.left_out.join(", ")}`,
      left, ny + ROW / 2, width - 2 * left);
    ny += ROW;
  }
  if (data.length > 1) {
    ctx.fillStyle = COLOURS.dim;
    ctx.font = "11px sans-serif";
    ctx.fillText(`image 1 of ${data.length} (all images: see the table output)`, left, ny + ROW / 2);
  }
  ctx.restore();
}

const REPORT_ROW = 20;

function reportHeight(lines) {
  return REPORT_ROW * (lines.length + 1) + 10;
}

function drawReport(ctx, lines, width, y) {
  ctx.save();
  ctx.fillStyle = "rgba(0,0,0,0.25)";
  ctx.fillRect(6, y, width - 12, reportHeight(lines) - 4);
  ctx.font = "bold 14px monospace";
  ctx.textBaseline = "middle";
  ctx.fillStyle = COLOURS.text;
  lines.forEach((line, i) => ctx.fillText(line, 12, y + 3 + REPORT_ROW * (i + 0.5), width - 24));
  ctx.font = "11px sans-serif";
  ctx.fillStyle = COLOURS.dim;
  ctx.fillText("below: image (left) beside its reference (right)", 12, y + 3 + REPORT_ROW * (lines.length + 0.5),
    width - 24);
  ctx.restore();
}

// A display-only widget (never serialised, so the workflow's positional widgets_values stay intact).
function showOnNode(node, name, value, draw, height) {
  let widget = node.widgets?.find((w) => w.name === name);
  if (!widget) {
    widget = node.addCustomWidget({
      name,
      type: name,
      value: null,
      serialize: false,
      options: { serialize: false },
      draw(ctx, _node, width, y) {
        if (this.value) draw(ctx, this.value, width, y);
      },
      computeSize(width) {
        return [width, this.value ? height(this.value) : 0];
      },
    });
  }
  widget.value = value;
  const size = node.computeSize();
  node.setSize([Math.max(node.size[0], 300, size[0]), Math.max(node.size[1], size[1])]);
  node.setDirtyCanvas(true, true);
}

function orderTemplates(names) {
  const rank = (name) => (TEMPLATE_ORDER.includes(name) ? TEMPLATE_ORDER.indexOf(name) : TEMPLATE_ORDER.length);
  return [...names].sort((a, b) => rank(a) - rank(b));
}

app.registerExtension({
  name: "uir_lora.weights",
  async setup() {
    const list = api.getWorkflowTemplates?.bind(api);
    if (!list) return;
    api.getWorkflowTemplates = async () => {
      const byPack = await list();
      for (const [pack, names] of Object.entries(byPack)) {
        if (names.some((name) => TEMPLATE_ORDER.includes(name))) byPack[pack] = orderTemplates(names);
      }
      return byPack;
    };
  },
  nodeCreated(node) {
    // runs before a saved workflow's values are applied, so a saved "randomize" is kept
    if (!SEEDED.has(node.comfyClass)) return;
    for (const widget of node.widgets ?? []) {
      if (widget.name === "control_after_generate") widget.value = "fixed";
    }
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name === "UIR_DegradationEstimator") {
      const onExecuted = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (message) {
        onExecuted?.apply(this, arguments);
        const data = message?.uir_weights;
        if (!Array.isArray(data) || !data.length || !Array.isArray(data[0].names)) return;
        showOnNode(this, "uir_weights", data, drawChart, chartHeight);
      };
    } else if (nodeData.name === "UIR_Compare") {
      const onExecuted = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (message) {
        onExecuted?.apply(this, arguments);
        const text = message?.text;
        if (!Array.isArray(text) || typeof text[0] !== "string") return;
        const lines = text[0].split("\n");
        showOnNode(this, "uir_report", lines, drawReport, reportHeight);
      };
    }
  },
});
