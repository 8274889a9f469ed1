"""Mixed pairs with the real bank: the router's top-K composition against single LoRAs and the
best pair weights found by a grid search (an oracle that sees the clean image)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch

from ... import pipeline
from ..evaluate.harness import MIXED_PAIRS, Case, synthesise
from ..evaluate.metrics import psnr

ORACLE_GRID = (0.5, 0.75, 1.0)  # 9 weight pairs per image: the CPU budget of this run


def _restore(x: torch.Tensor, backbone, bank, **kwargs) -> torch.Tensor:
    return pipeline.restore(x, backbone, bank, **kwargs)[0]


ORACLE_METHODS = ("input", "best_single", "oracle_pair")  # need no router: may come from an earlier run


def pair_scores(clean: torch.Tensor, kinds: tuple[str, ...], seed: int, backbone, bank,
                methods: tuple[str, ...] = ("router", *ORACLE_METHODS)) -> dict[str, float]:
    """PSNR of the asked methods on one degraded image (``kinds`` in physical order)."""
    degraded, _ = synthesise(clean, Case(kinds), seed)
    scores = {}
    if "input" in methods:
        scores["input"] = psnr(degraded, clean)
    if "router" in methods:
        routed, compositions = pipeline.restore(degraded, backbone, bank)
        scores["router"] = psnr(routed, clean)
        scores["router_hits_both"] = float(set(kinds) <= set(compositions[0].weights))
    if "best_single" in methods:
        scores["best_single"] = max(psnr(_restore(degraded, backbone, bank, manual={k: 1.0}), clean) for k in kinds)
    if "oracle_pair" in methods:
        scores["oracle_pair"] = max(
            psnr(_restore(degraded, backbone, bank, manual=dict(zip(kinds, w))), clean)
            for w in itertools.product(ORACLE_GRID, repeat=len(kinds))
        )
    return scores


def mixed_pairs(bank_dir: Path, max_images: int | None = None, seed: int = 0,
                methods: tuple[str, ...] = ("router", *ORACLE_METHODS), previous: list[dict] | None = None) -> dict:
    """Mean PSNR per pair and method over the validation images; per-image rows in ``rows``.

    ``previous``: rows of an earlier run on the same images and seeds whose values are reused.
    """
    from ...bank.store import open_bank
    from ...degrade import canonical_kinds
    from ..train.data import load_validation_images

    bank = open_bank(bank_dir)
    backbone = pipeline.default_backbone()
    images = load_validation_images()[:max_images]
    known = {(row["pair"], row["image"]): row for row in previous or []}
    rows, summary = [], {}
    for pair in MIXED_PAIRS:
        kinds = tuple(canonical_kinds(pair))
        name = "+".join(kinds)
        per_image = []
        for i, image in enumerate(images):
            old = {k: v for k, v in known.get((name, i), {}).items() if k not in ("pair", "image")}
            todo = tuple(m for m in methods if m not in old)
            per_image.append({**old, **pair_scores(image[None], kinds, seed + 1000 * i, backbone, bank, todo)})
        rows += [{"pair": name, "image": i, **s} for i, s in enumerate(per_image)]
        summary[name] = {m: round(float(np.mean([s[m] for s in per_image])), 3) for m in per_image[0]}
    return {"summary": summary, "rows": rows, "images": len(images), "grid": ORACLE_GRID}


def main() -> None:
    """``python -m uir_lora.lab.router.pairs BANK N OUT.json [METHOD,...]`` (default: the oracle methods)."""
    import json
    import sys

    torch.set_num_threads(1)
    methods = tuple(sys.argv[4].split(",")) if len(sys.argv) > 4 else ORACLE_METHODS
    result = mixed_pairs(Path(sys.argv[1]), int(sys.argv[2]), methods=methods)
    Path(sys.argv[3]).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
