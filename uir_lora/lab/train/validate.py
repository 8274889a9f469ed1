"""Validation on the fixed split (seeded degradations of the 9 held-out photos) or on a user's held-out pairs;
torchmetrics PSNR/SSIM."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from ...backbones.base import Backbone
from ...global_stage import GlobalAdapter, run_adapters
from .trainer import CLEAN, conditioning_of, degrade_batch

VALIDATION_SEED = 10_000
VERSIONS_PER_IMAGE = 2  # two seeded degradations per photo: 18 pairs per kind
SEVERITY_POLICY = ("severity drawn from the kind's full training range by degrade(); generator seeded "
                   f"{VALIDATION_SEED} + image index * {VERSIONS_PER_IMAGE} + version")


def validation_pairs(images: torch.Tensor, kind: str | list[str],
                     severity: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(degraded, clean), each [N*2,3,H,W]; identical for every run (fixed seeds)."""
    degraded, clean = [], []
    for i, image in enumerate(images.split(1)):
        for v in range(VERSIONS_PER_IMAGE):
            gen = torch.Generator().manual_seed(VALIDATION_SEED + i * VERSIONS_PER_IMAGE + v)
            degraded.append(degrade_batch(image, kind, gen, severity))
            clean.append(image)
    return torch.cat(degraded), torch.cat(clean)


def scores(output: torch.Tensor, target: torch.Tensor) -> tuple[float | None, float]:
    """Mean per-image PSNR (None when identical: infinite) and SSIM."""
    psnr = PeakSignalNoiseRatio(data_range=1.0, reduction="none", dim=(1, 2, 3))(output, target)
    ssim = StructuralSimilarityIndexMeasure(data_range=1.0)(output, target)
    psnr_value = float(psnr.mean())
    return (round(psnr_value, 3) if torch.isfinite(psnr).all() else None), round(float(ssim), 4)


def _restore(backbone: Backbone, images: torch.Tensor, conditioning: Mapping[str, float],
             measured: Sequence[str] = ()) -> torch.Tensor:
    with torch.inference_mode():
        batches = [x.to(backbone.device) for x in images.split(6)]
        return torch.cat([backbone.restore_step(x, conditioning_of(backbone, x, conditioning, measured))
                          .float().clamp(0, 1).cpu() for x in batches])


def set_adapter_enabled(backbone: Backbone, name: str | None) -> None:
    """Activate only adapter ``name`` (None: plain backbone)."""
    for layer in backbone.lora_layers():
        layer.enable_adapters(name is not None)
        if name is not None:
            layer.set_adapter(name)


def validate(backbone: Backbone, kind: str | list[str], images: torch.Tensor, conditioning: Mapping[str, float],
             adapter: str | None, severity: float | None = None,
             global_stage: GlobalAdapter | None = None, measured: Sequence[str] = ()) -> dict:
    """Input, backbone-alone (same conditioning) and restored scores for ``kind``; ``global_stage``: the kind's
    global adapter, run on each degraded image before the LoRA as the sampler runs it (not before the
    backbone alone, which is the bare network); ``measured``: conditioning values read from each image."""
    degraded, clean = validation_pairs(images, kind, severity)
    psnr_in, ssim_in = scores(degraded, clean)
    set_adapter_enabled(backbone, None)
    base_psnr, base_ssim = scores(_restore(backbone, degraded, conditioning, measured), clean)
    result = {"psnr_in": psnr_in, "ssim_in": ssim_in, "base_psnr": base_psnr, "base_ssim": base_ssim}
    if adapter is not None:
        set_adapter_enabled(backbone, adapter)
        with torch.inference_mode():
            inputs = run_adapters(degraded, [(1.0, global_stage)] if global_stage is not None else [])
        result["psnr_out"], result["ssim_out"] = scores(_restore(backbone, inputs, conditioning, measured), clean)
    policy = SEVERITY_POLICY if severity is None else f"severity fixed at {severity}, same seeds"
    result.update(images=int(degraded.shape[0]), photos=int(images.shape[0]), severity_policy=policy,
                  note="clean LoRA: psnr_in is infinite (recorded null); psnr_out is the distortion it adds"
                  if kind == CLEAN else "")
    if not result["note"]:
        del result["note"]
    return result


PAIR_SIDE = 512
"""Held-out pairs are scored on their centre crop of at most this side (restoring whole 12 MP photos on a CPU
would take minutes and says little more)."""


def _centre(image: torch.Tensor, side: int = PAIR_SIDE) -> torch.Tensor:
    height, width = image.shape[-2:]
    top, left = max(0, height - side) // 2, max(0, width - side) // 2
    return image[..., top:top + side, left:left + side]


def validate_pairs(backbone: Backbone, pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
                   conditioning: Mapping[str, float], adapter: str | None, measured: Sequence[str] = ()) -> dict:
    """Input, backbone-alone and restored scores on (damaged, clean) pairs [1,3,H,W] of any sizes, averaged
    over the pairs (each pair's centre crop of at most PAIR_SIDE px)."""
    crops = [(_centre(damaged), _centre(clean)) for damaged, clean in pairs]

    def averaged(restore: bool) -> tuple[float | None, float]:
        rows = [scores(_restore(backbone, damaged, conditioning, measured) if restore else damaged, clean)
                for damaged, clean in crops]
        psnrs, ssims = zip(*rows)
        return (None if None in psnrs else round(sum(psnrs) / len(rows), 3)), round(sum(ssims) / len(rows), 4)

    result: dict = {}
    result["psnr_in"], result["ssim_in"] = averaged(False)
    set_adapter_enabled(backbone, None)
    result["base_psnr"], result["base_ssim"] = averaged(True)
    if adapter is not None:
        set_adapter_enabled(backbone, adapter)
        result["psnr_out"], result["ssim_out"] = averaged(True)
    result.update(images=len(crops), crop=f"centre, at most {PAIR_SIDE} px")
    return result
