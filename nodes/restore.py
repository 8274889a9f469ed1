"""The Restore node: the composed backbone over tiles, with ComfyUI's progress bar and interrupt."""

from __future__ import annotations

import logging

from comfy_api.latest import io

from ..uir_lora import pipeline
from ..uir_lora.errors import InputError
from .common import CATEGORY, Backbone, Composition, hooks, to_comfy, to_engine

log = logging.getLogger(__name__)


class UIR_Restore(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="UIR_Restore", display_name="UIR Restore", category=CATEGORY,
            description="Restore images with the backbone and the composed LoRAs (tiled, any size).",
            inputs=[
                io.Image.Input("image", tooltip="the damaged image(s); any size, restored tile by tile"),
                Backbone.Input("backbone", tooltip="the same backbone the Bank Loader got"),
                Composition.Input("composition", tooltip="the LoRA weights from UIR LoRA Composer"),
                io.Float.Input("strength", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="0 = the input, 1 = the full restoration"),
                io.Int.Input("tile", default=512, min=64, max=4096, step=32,
                             tooltip="tile size in pixels; halved automatically on out-of-memory"),
                # one deterministic step: a seed that changes after each run would only re-run the same work
                io.Int.Input("seed", default=0, min=0, max=2**63 - 1, control_after_generate=True,
                             tooltip="used only by a backbone that draws random numbers (the built-in FFDNet "
                                     "does not); starts fixed, so queueing again re-runs nothing"),
                io.Boolean.Input("spatial", default=False,
                                 tooltip="route each region of the image separately (mixed damage)"),
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="the restored image(s), same size as the input")],
        )

    @classmethod
    def execute(cls, image, backbone, composition: list, strength: float, tile: int, seed: int,
                spatial: bool) -> io.NodeOutput:
        images = to_engine(image)
        options = pipeline.SamplerOptions(tile=tile, seed=seed)
        progress, check_interrupt = hooks()
        if spatial:
            restored = restore_spatial(images, backbone, composition, strength, options, progress, check_interrupt)
        else:
            restored = pipeline.restore_composed(images, backbone, composition, strength, options, progress,
                                                 check_interrupt)
        return io.NodeOutput(to_comfy(restored))


def restore_spatial(images, backbone, compositions: list, strength, options, progress, check_interrupt):
    """Per-region routing: the engine routes each window itself; the composition gives the bank and fused mode.

    Only plain router (Composer mode auto) or plain manual compositions have a per-region meaning; the
    router uses the bank's top_k and temperature here.
    """
    first = compositions[0]
    if first.source not in ("router", "manual"):
        raise InputError(f"spatial routing needs a Composer in mode 'auto' (or 'manual'), not one whose weights "
                         f"come from {first.source!r}; change the Composer's mode or set spatial to false")
    manual = dict(first.weights) if first.source == "manual" else None
    restored, summaries = pipeline.restore(images, backbone, first.bank, manual=manual,
                                           mode="manual" if manual else "override", fused=first.fused,
                                           strength=strength, options=options, progress=progress,
                                           check_interrupt=check_interrupt, spatial=True)
    for index, summary in enumerate(summaries):  # the windows' own routing has no table on the Estimator's node
        log.info("UIR per-region restore, image %d: %s", index, "; ".join(summary.notes))
    return restored
