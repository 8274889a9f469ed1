"""Choosing the router's top-K and softmax temperature for restoration quality, not for classification.

The router's fit learns T by cross-entropy, which rewards confident single-kind decisions, while a
mixture needs both LoRAs at comparable weight. So ``train-router`` ends with this sweep: restore every
single kind and the benchmark's mixed pairs on *training* photos (the benchmark and the router's
evaluation use the validation photos, so they stay held out) for each (top-K, T) of a grid, and keep the
top-2 pair with the best mean PSNR as the bank's defaults. Top-1 is measured for comparison only: the
default stays a composition of two LoRAs, the method's form.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from ... import pipeline
from ...backbones.base import Backbone
from ...bank.manifest import read_manifest, write_manifest
from ...bank.store import open_bank
from ...compose.composer import Composition
from ...errors import BackboneError, InputError
from ...sampler.restore import SamplerOptions, restore_batch
from ..evaluate.harness import Case, default_cases, synthesise
from ..evaluate.metrics import psnr

log = logging.getLogger(__name__)

GRID = (None, 0.006, 0.02, 0.03, 0.05, 0.12)  # None: the temperature the fit learned
# (top_k, temperature) pairs tried; with one LoRA the temperature does not matter
COMBOS = ((1, None), *((2, t) for t in GRID))
SEED = 5000
DEFAULT_PHOTOS = 9


def training_photos(count: int, size: int = 256) -> list[torch.Tensor]:
    """Centre crops of the first ``count`` training photos, downscaled x2 like the validation ones."""
    from ..train.data import split_photos
    from .data import load_scaled

    photos = []
    for path in split_photos()[0][:count]:
        image = load_scaled(path, 960)
        top, left = (image.shape[-2] - size) // 2, (image.shape[-1] - size) // 2
        photos.append(image[..., top : top + size, left : left + size].contiguous())
    return photos


def combo_key(top_k: int, temperature: float | None) -> str:
    return f"k{top_k} T={'learned' if temperature is None else f'{temperature:g}'}"


def bank_backbone(family: str) -> Backbone:
    """The backbone a bank was made for, where the family alone names its weights (the embedded ones)."""
    try:
        return pipeline.load_backbone(family)
    except BackboneError as exc:
        raise InputError(f"the temperature sweep restores with the bank's own backbone, which a {family!r} bank "
                         f"does not name ({exc}); run train-router with --temperature-photos 0") from exc


def sweep(bank_dir: Path, photos: Sequence[torch.Tensor], cases: Sequence[Case] | None = None,
          combos: Sequence[tuple[int, float | None]] = COMBOS) -> dict:
    """Mean restoration PSNR per (top-K, T) and case over ``photos``, routed by the bank's router."""
    bank = open_bank(bank_dir)
    backbone = bank_backbone(bank.manifest.backbone_family)
    router = pipeline.router_for(bank)
    learned = bank.manifest.router.temperature
    scores: dict[str, dict[str, list[float]]] = {}
    for index, clean in enumerate(photos):
        for number, case in enumerate(cases or default_cases()):
            degraded, _ = synthesise(clean, case, SEED + 97 * index + number)
            sims = router.similarities(degraded)
            for top_k, temperature in combos:
                weights = router.weights(sims, min(top_k, len(router.names)),
                                         learned if temperature is None else temperature, "softmax")[0]
                composition = Composition(bank=bank, weights={n: float(w) for n, w in zip(router.names, weights)
                                                              if w > 0})
                restored = restore_batch(backbone, degraded, [composition], SamplerOptions())
                scores.setdefault(combo_key(top_k, temperature), {}).setdefault(case.name, []).append(
                    psnr(restored, clean))
        log.info("temperature sweep: photo %d/%d", index + 1, len(photos))
    table = {key: {case: sum(v) / len(v) for case, v in per_case.items()} for key, per_case in scores.items()}
    pairs = {key: [v for case, v in per_case.items() if "+" in case] for key, per_case in table.items()}
    return {"learned_temperature": learned, "photos": len(photos), "seed": SEED, "psnr": table,
            "mean": {key: sum(c.values()) / len(c) for key, c in table.items()},
            "mean_pairs": {key: sum(v) / len(v) if v else None for key, v in pairs.items()}}


def best_top2(result: dict) -> tuple[int, float, str]:
    """The top-2 (top-K, temperature) with the best mean PSNR, as (top_k, temperature, its key)."""
    best = max((key for key in result["mean"] if key.startswith("k2")), key=result["mean"].get)
    top_k, temperature = best.split(" T=")
    chosen = result["learned_temperature"] if temperature == "learned" else float(temperature)
    return int(top_k[1:]), chosen, best


def record_choice(bank_dir: Path, result: dict, photos: str, command: str) -> tuple[int, float]:
    """Write the best top-2 pair into the bank's router defaults, with the sweep beside it."""
    top_k, temperature, key = best_top2(result)
    manifest = read_manifest(bank_dir)
    manifest.router.top_k = top_k
    manifest.router.temperature = temperature
    manifest.router.calibration["temperature_sweep"] = {
        "chosen": key, "learned": result["learned_temperature"], "mean_psnr": result["mean"],
        "mean_pairs_psnr": result["mean_pairs"], "photos": photos, "command": command}
    write_manifest(manifest, bank_dir)
    return top_k, temperature
