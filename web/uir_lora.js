// UIR-LoRA: draws the Degradation Estimator's routing inside the node after each run.
// The node's ui dict carries "uir_weights": one {names, similarities, weights, top_k, temperature,
// normalisation, unknown} per image (nodes/routing.py: weights_ui). Public APIs only.
import { app } from "../../scripts/app.js";

const ROW = 18;
const HEAD = 22;
const COLOURS = { bar: "#4696e6", kept: "#f0a028", warn: "#dc3c3c", text: "#e6e6e6", dim: "#9a9a9a" };

function rowsOf(entry) {
  const rows = entry.names.map((name, i) => ({ name, sim: entry.similarities[i], weight: entry.weights[i] }));
  return rows.sort((a, b) => b.weight - a.weight || b.sim - a.sim);
}

function chartHeight(data) {
  if (!data || !data.length) return 0;
  return HEAD + ROW * data[0].names.length + (data[0].unknown ? ROW : 0) + (data.length > 1 ? ROW : 0) + 6;
}

function drawChart(ctx, data, width, y) {
  const entry = data[0];
  const left = 10, labelW = 100, valueW = 84;
  const barW = Math.max(20, width - 2 * left - labelW - valueW);
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
    ctx.fillStyle = kept ? COLOURS.text : COLOURS.dim;
    ctx.font = kept ? "bold 12px sans-serif" : "12px sans-serif";
    ctx.fillText((kept ? "\u2605 " : "  ") + row.name, left, ry + ROW / 2, labelW - 4);
    ctx.fillStyle = COLOURS.bar;
    ctx.fillRect(left + labelW, ry + ROW - 6, barW * Math.max(0, Math.min(1, row.sim)), 3);
    if (kept) {
      ctx.fillStyle = COLOURS.kept;
      ctx.fillRect(left + labelW, ry + 3, Math.max(2, barW * Math.min(1, row.weight)), ROW - 10);
    }
    ctx.font = "11px monospace";
    ctx.textAlign = "right";
    ctx.fillStyle = kept ? COLOURS.kept : COLOURS.dim;
    ctx.fillText(row.weight.toFixed(2), width - left - 40, ry + ROW / 2);
    ctx.fillStyle = COLOURS.bar;
    ctx.fillText(row.sim.toFixed(2), width - left, ry + ROW / 2);
    ctx.textAlign = "left";
  });
  let ny = y + HEAD + entry.names.length * ROW;
  if (entry.unknown) {
    ctx.fillStyle = COLOURS.warn;
    ctx.font = "bold 12px sans-serif";
    ctx.fillText("\u26a0 unknown degradation: no LoRA fits well", left, ny + ROW / 2);
    ny += ROW;
  }
  if (data.length > 1) {
    ctx.fillStyle = COLOURS.dim;
    ctx.font = "11px sans-serif";
    ctx.fillText(`image 1 of ${data.length} (all images: see the table output)`, left, ny + ROW / 2);
  }
  ctx.restore();
}

app.registerExtension({
  name: "uir_lora.weights",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "UIR_DegradationEstimator") return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const data = message?.uir_weights;
      if (!Array.isArray(data) || !data.length || !Array.isArray(data[0].names)) return;
      let widget = this.widgets?.find((w) => w.name === "uir_weights");
      if (!widget) {
        widget = this.addCustomWidget({
          name: "uir_weights",
          type: "uir_weights",
          value: null,
          serialize: false, // display only: keeps the workflow's positional widgets_values intact
          options: { serialize: false },
          draw(ctx, node, width, y) {
            if (this.value) drawChart(ctx, this.value, width, y);
          },
          computeSize(width) {
            return [width, chartHeight(this.value)];
          },
        });
      }
      widget.value = data;
      const size = this.computeSize();
      this.setSize([Math.max(this.size[0], 300, size[0]), Math.max(this.size[1], size[1])]);
      this.setDirtyCanvas(true, true);
    };
  },
});
