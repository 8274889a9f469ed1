"""Mixed pairs with the real bank: the router's top-K composition against single LoRAs and the
best pair weights found by a grid search (an oracle that sees the clean image)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch

from .. import pipeline
from ..evaluate.harness import MIXED_PAIRS, Case, synthesise
from ..evaluate.metrics import psnr

ORACLE_GRID = (0.25, 0.5, 0.75, 1.0)


def _restore(x: torch.Tensor, backbone, bank, **kwargs) -> torch.Tensor:
    return pipeline.restore(x, backbone, bank, **kwargs)[0]


def pair_scores(clean: torch.Tensor, kinds: tuple[str, ...], seed: int, backbone, bank) -> dict[str, float]:
    """PSNR of every method on one degraded image (``kinds`` in physical order)."""
    degraded, _ = synthesise(clean, Case(kinds), seed)
    routed, compositions = pipeline.restore(degraded, backbone, bank)
    scores = {"input": psnr(degraded, clean), "router": psnr(routed, clean),
              "router_top1": psnr(_restore(degraded, backbone, bank, top_k=1), clean)}
    singles = {k: psnr(_restore(degraded, backbone, bank, manual={k: 1.0}), clean) for k in kinds}
    scores["best_single"] = max(singles.values())
    scores["oracle_pair"] = max(
        psnr(_restore(degraded, backbone, bank, manual=dict(zip(kinds, w))), clean)
        for w in itertools.product(ORACLE_GRID, repeat=len(kinds))
    )
    scores["router_hits_both"] = float(set(kinds) <= set(compositions[0].weights))
    return scores


def mixed_pairs(bank_dir: Path, max_images: int | None = None, seed: int = 0) -> dict:
    """Mean PSNR per pair and method over the validation images; per-image rows in ``rows``."""
    from ..bank.store import open_bank
    from ..degrade import canonical_kinds
    from ..train.data import load_validation_images

    bank = open_bank(bank_dir)
    backbone = pipeline.default_backbone()
    images = load_validation_images()[:max_images]
    rows, summary = [], {}
    for pair in MIXED_PAIRS:
        kinds = tuple(canonical_kinds(pair))
        per_image = [pair_scores(image[None], kinds, seed + 1000 * i, backbone, bank) for i, image in enumerate(images)]
        rows += [{"pair": "+".join(kinds), "image": i, **s} for i, s in enumerate(per_image)]
        summary["+".join(kinds)] = {m: round(float(np.mean([s[m] for s in per_image])), 3) for m in per_image[0]}
    return {"summary": summary, "rows": rows, "images": len(images), "grid": ORACLE_GRID}
