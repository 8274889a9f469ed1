"""Demo helpers: shipped example images, synthetic degradations, PSNR/SSIM against a reference."""

from __future__ import annotations

import torch
from comfy_api.latest import io, ui

from ..uir_lora import pipeline
from ..uir_lora.errors import InputError, check_int
from .common import CATEGORY, to_comfy, to_engine

EXAMPLES = pipeline.PACK_ROOT / "workflows" / "inputs"
"""Photos shipped with the pack (public domain / CC0, see CREDITS there), so workflows run as is."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
NONE = "none"


def example_choices() -> list[str]:
    if not EXAMPLES.is_dir():
        return []
    return sorted(p.name for p in EXAMPLES.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


class UIR_ExampleImage(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="UIR_ExampleImage", display_name="UIR Example Image", category=CATEGORY,
            description="A photo shipped with the pack (public domain or CC0), so no upload is needed.",
            inputs=[io.Combo.Input("image", options=example_choices(),
                                   tooltip="a photo from the pack's workflows/inputs/ (credits in CREDITS.md there)")],
            outputs=[io.Image.Output(display_name="image", tooltip="the photo as a ComfyUI IMAGE")],
        )

    @classmethod
    def execute(cls, image: str) -> io.NodeOutput:
        path = pipeline.safe_resolve(image, [EXAMPLES], what="example image")
        return io.NodeOutput(to_comfy(pipeline.load_image(path)))


class UIR_SyntheticDegrade(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="UIR_SyntheticDegrade", display_name="UIR Synthetic Degrade", category=CATEGORY,
            description="Damage a clean image on purpose (one or two degradations, applied in physical order).",
            inputs=[
                io.Image.Input("image", tooltip="a clean image to damage"),
                io.Combo.Input("kind", options=list(pipeline.KINDS), default=pipeline.KINDS[0],
                               tooltip="the degradation to apply (one LoRA of the shipped bank is trained per kind)"),
                io.Combo.Input("second_kind", options=[NONE, *pipeline.KINDS], default=NONE,
                               tooltip="an optional second degradation; the two are applied in physical order"),
                io.Float.Input("severity", default=0.5, min=0.0, max=1.0, step=0.05, tooltip="0 mild, 1 strong"),
                io.Int.Input("seed", default=0, min=0, max=2**63 - 1, control_after_generate=True,
                             tooltip="the random draw of noise, rain, blur kernels...; starts fixed, so the same "
                                     "damage comes back on every queue"),
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="the damaged image")],
        )

    @classmethod
    def execute(cls, image, kind: str, second_kind: str, severity: float, seed: int) -> io.NodeOutput:
        kinds = [kind] if second_kind == NONE else [kind, second_kind]
        generator = torch.Generator().manual_seed(check_int("seed", seed, 0, 2**63 - 1))
        damaged = pipeline.degrade(to_engine(image), kinds, generator=generator, severity=severity)
        return io.NodeOutput(to_comfy(damaged))


def psnr_ssim(image: torch.Tensor, reference: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-image PSNR (dB) and SSIM of [B,3,H,W] against [B|1,3,H,W], data range 1."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    if reference.shape[0] == 1:
        reference = reference.expand_as(image) if image.shape[1:] == reference.shape[1:] else reference
    if image.shape != reference.shape:
        raise InputError(f"image {tuple(image.shape[-2:])} x{image.shape[0]} and reference "
                         f"{tuple(reference.shape[-2:])} x{reference.shape[0]} must have the same size")
    if min(image.shape[-2:]) < 11:
        raise InputError(f"SSIM needs images of at least 11x11 pixels, got {tuple(image.shape[-2:])}")
    psnr = peak_signal_noise_ratio(image, reference, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(image, reference, data_range=1.0, reduction="none")
    return psnr.tolist(), ssim.tolist()


def side_by_side(images: torch.Tensor, references: torch.Tensor, gap: int = 4) -> torch.Tensor:
    """[B,3,H,W] images with their references to the right, split by a white gap (what the node previews)."""
    references = references.expand_as(images) if references.shape[0] == 1 else references
    divider = torch.ones(*images.shape[:3], gap, dtype=images.dtype)
    return torch.cat([images, divider, references], dim=3)


class UIR_Compare(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="UIR_Compare", display_name="UIR Compare (PSNR/SSIM)", category=CATEGORY,
            description="PSNR and SSIM of an image against a clean reference (mean over the batch). The numbers "
                        "and the image beside its reference show on the node after a run.",
            inputs=[io.Image.Input("image", tooltip="the image to score (e.g. damaged, or restored)"),
                    io.Image.Input("reference", tooltip="the clean image, same size (one, or one per image)")],
            outputs=[io.String.Output(display_name="report", tooltip="PSNR and SSIM as text, one line per image"),
                     io.Float.Output(display_name="psnr", tooltip="mean PSNR in dB (higher is closer)"),
                     io.Float.Output(display_name="ssim", tooltip="mean SSIM, 0 to 1 (higher is closer)")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, image, reference) -> io.NodeOutput:
        images, references = to_engine(image), to_engine(reference)
        psnr, ssim = psnr_ssim(images, references)
        lines = [f"image {i}: PSNR {p:.2f} dB, SSIM {s:.4f}" for i, (p, s) in enumerate(zip(psnr, ssim))]
        mean_psnr, mean_ssim = sum(psnr) / len(psnr), sum(ssim) / len(ssim)
        if len(lines) > 1:
            lines.append(f"mean: PSNR {mean_psnr:.2f} dB, SSIM {mean_ssim:.4f}")
        report = "\n".join(lines)
        # "text" is drawn on the node by web/uir_lora.js; the previews are each image beside its reference
        pairs = ui.PreviewImage(to_comfy(side_by_side(images, references)), cls=cls).as_dict()
        return io.NodeOutput(report, mean_psnr, mean_ssim, ui={**pairs, **ui.PreviewText(report).as_dict()})
