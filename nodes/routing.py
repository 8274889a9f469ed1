"""Degradation Estimator (router) and LoRA Composer nodes."""

from __future__ import annotations

import logging

import numpy as np
import torch
from comfy_api.latest import io

from ..uir_lora import pipeline
from ..uir_lora.errors import TEMPERATURE_RANGE, InputError, check_range
from .common import CATEGORY, Bank, Composition, Routing, to_engine

log = logging.getLogger(__name__)

BANK_DEFAULT = "bank default"
COMPOSE_MODES = ("auto", *pipeline.BLEND_MODES)


def weights_ui(results: list[pipeline.RoutingResult], compositions: list[pipeline.Composition]) -> list[dict]:
    """JSON-able per-image weights for the node's ui dict (key "uir_weights", drawn by the web extension);
    ``left_out``: kinds the router keeps but the automatic restore (``compositions``) does not apply."""
    return [{"names": list(r.similarities), "similarities": [round(v, 4) for v in r.similarities.values()],
             "weights": [round(r.weights.get(n, 0.0), 4) for n in r.similarities],
             "left_out": sorted(set(r.weights) - set(c.weights)),
             "top_k": r.top_k, "temperature": r.temperature, "normalisation": r.normalisation,
             "unknown": r.unknown} for r, c in zip(results, compositions)]


def chart_batch(results: list[pipeline.RoutingResult]) -> torch.Tensor:
    """One bar chart per image as a ComfyUI IMAGE batch (charts padded to a common height)."""
    charts = [pipeline.weight_chart(r) for r in results]
    height = max(c.shape[0] for c in charts)
    padded = [np.pad(c, ((0, height - c.shape[0]), (0, 0), (0, 0)), constant_values=30) for c in charts]
    return torch.from_numpy(np.stack(padded)).float() / 255


class UIR_DegradationEstimator(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="UIR_DegradationEstimator", display_name="UIR Degradation Estimator", category=CATEGORY,
            description="Route each image: similarity to every LoRA of the bank, then top-K weights (the shipped "
                        "bank: each kept kind's presence, 0 to 1).",
            inputs=[
                io.Image.Input("image", tooltip="the damaged image(s) to route; each image gets its own weights"),
                Bank.Input("bank", tooltip="the bank from UIR LoRA Bank Loader"),
                io.Int.Input("top_k", default=0, min=0, max=64, tooltip="LoRAs kept per image; 0 = the bank's default"),
                # min 0, not the router's minimum: 0 stands for the bank's default (see validate_inputs)
                io.Float.Input("temperature", default=0.0, min=0.0, max=TEMPERATURE_RANGE[1], step=0.005,
                               tooltip=f"temperature of the normalisation, {TEMPERATURE_RANGE[0]:g} to "
                                       f"{TEMPERATURE_RANGE[1]:g}; 0 = the bank's default (1 for the shipped bank)"),
                io.Combo.Input("normalisation", options=[BANK_DEFAULT, *pipeline.NORMALISATIONS], default=BANK_DEFAULT,
                               tooltip="how the top-K similarities become weights: sigmoid (each kind's own "
                                       "presence, the shipped bank's), softmax (with the temperature, summing to 1) "
                                       "or sum (each divided by their total); bank default = the bank's"),
            ],
            outputs=[Routing.Output(display_name="routing", tooltip="per-image LoRA weights for the Composer"),
                     io.Image.Output(display_name="chart",
                                     tooltip="the routing as a bar chart image, to save or preview elsewhere"),
                     io.String.Output(display_name="table", tooltip="similarity and weight of every LoRA, and the "
                                                                    "severity of each kept kind, as text")],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, temperature: float | None) -> bool | str:
        # Refuses 0 < t < the router's minimum before the graph runs (ComfyUI skips its own min/max check
        # for inputs named here); None is a linked value, which the router checks at run time.
        if temperature is None or temperature == 0:
            return True
        try:
            check_range("temperature (0 = the bank's default)", temperature, *TEMPERATURE_RANGE)
        except InputError as exc:
            return str(exc)
        return True

    @classmethod
    def execute(cls, image: torch.Tensor, bank, top_k: int, temperature: float, normalisation: str) -> io.NodeOutput:
        results = pipeline.estimate(bank, to_engine(image), top_k or None, temperature or None,
                                    None if normalisation == BANK_DEFAULT else normalisation)
        for i, r in enumerate(results):
            log.info("UIR routing, image %d: %s", i, {n: round(w, 3) for n, w in r.weights.items()})
        chart = chart_batch(results)
        automatic = [pipeline.compose(bank, r) for r in results]  # what the restore applies: once per image
        tables = ["\n".join([r.table()] + [f"restore: {note}" for note in pipeline.restore_notes(bank, r, c)])
                  for r, c in zip(results, automatic)]
        table = "\n\n".join(f"image {i}\n{t}" if len(results) > 1 else t for i, t in enumerate(tables))
        # drawn on the node by web/uir_lora.js; no image preview of the chart as well (it would show the routing twice)
        return io.NodeOutput(results, chart, table, ui={"uir_weights": weights_ui(results, automatic)})


class UIR_LoraComposer(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="UIR_LoraComposer", display_name="UIR LoRA Composer", category=CATEGORY,
            description="Decide the LoRA weights: auto (router), manual (typed weights only), override "
                        "(typed weights replace the router's) or bias (typed weights are added).",
            inputs=[
                Bank.Input("bank", tooltip="the bank from UIR LoRA Bank Loader"),
                Routing.Input("routing", optional=True,
                              tooltip="the Degradation Estimator's routing; needed by every mode but manual"),
                io.Combo.Input("mode", options=list(COMPOSE_MODES), default="auto",
                               tooltip="auto: the router's weights; manual: only the typed weights; override: typed "
                                       "weights replace the router's; bias: typed weights are added"),
                io.String.Input("weights", default="", tooltip="e.g. noise=0.7,jpeg=0.3 (ignored in auto mode)"),
                io.Boolean.Input("fused", default=True, tooltip="merge the weighted LoRAs into the weights: "
                                 "as fast as the bare backbone; off = peft adapters side by side"),
            ],
            outputs=[Composition.Output(display_name="composition",
                                        tooltip="the weighted LoRAs per image, for UIR Restore")],
        )

    @classmethod
    def execute(cls, bank, mode: str, weights: str, fused: bool, routing: list | None = None) -> io.NodeOutput:
        manual = pipeline.parse_weights(weights)
        if mode not in COMPOSE_MODES:
            raise InputError(f"mode must be one of {COMPOSE_MODES}, got {mode!r}")
        if mode != "manual" and not routing:
            raise InputError(f"mode {mode!r} needs the routing input: connect a UIR Degradation Estimator, "
                             f"or choose mode 'manual'")
        if mode == "manual" and not manual:
            raise InputError("mode 'manual' needs weights such as 'noise=0.7,jpeg=0.3'")
        if mode == "auto":
            if manual:
                log.warning("UIR LoRA Composer: mode 'auto' ignores the typed weights %s", manual)
            manual, mode = {}, "override"
        per_image = routing if mode != "manual" else [None]
        return io.NodeOutput([pipeline.compose(bank, r, manual, mode, fused) for r in per_image])
