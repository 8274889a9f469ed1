"""Validation on the fixed split: seeded degradations of the 9 held-out photos, torchmetrics PSNR/SSIM."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from ..backbones.base import Backbone
from .trainer import CLEAN, degrade_batch

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


def _restore(backbone: Backbone, images: torch.Tensor, conditioning: Mapping[str, float]) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([backbone.restore_step(x.to(backbone.device), conditioning).float().clamp(0, 1).cpu()
                          for x in images.split(6)])


def set_adapter_enabled(backbone: Backbone, name: str | None) -> None:
    """Activate only adapter ``name`` (None: plain backbone)."""
    for layer in backbone.lora_layers():
        layer.enable_adapters(name is not None)
        if name is not None:
            layer.set_adapter(name)


def validate(backbone: Backbone, kind: str | list[str], images: torch.Tensor, conditioning: Mapping[str, float],
             adapter: str | None, severity: float | None = None) -> dict:
    """Input, backbone-alone (same conditioning) and restored scores for ``kind``."""
    degraded, clean = validation_pairs(images, kind, severity)
    psnr_in, ssim_in = scores(degraded, clean)
    set_adapter_enabled(backbone, None)
    base_psnr, base_ssim = scores(_restore(backbone, degraded, conditioning), clean)
    result = {"psnr_in": psnr_in, "ssim_in": ssim_in, "base_psnr": base_psnr, "base_ssim": base_ssim}
    if adapter is not None:
        set_adapter_enabled(backbone, adapter)
        result["psnr_out"], result["ssim_out"] = scores(_restore(backbone, degraded, conditioning), clean)
    policy = SEVERITY_POLICY if severity is None else f"severity fixed at {severity}, same seeds"
    result.update(images=int(degraded.shape[0]), photos=int(images.shape[0]), severity_policy=policy,
                  note="clean LoRA: psnr_in is infinite (recorded null); psnr_out is the distortion it adds"
                  if kind == CLEAN else "")
    if not result["note"]:
        del result["note"]
    return result
