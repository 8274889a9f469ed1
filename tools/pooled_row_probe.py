"""A kind's presence row refitted on the trained encoder's pooled statistics, in a copy of a bank.

    python tools/pooled_row_probe.py BANK_COPY --kind motion_blur --examples 8000 --photos SCENE_TRAIN_DIR \
        --short-shake-share 0.35 --route-margin 0

The encoder's neck reduces 512 pooled statistics of its trunk to ``d``, and a 3 px shake that those statistics tell
from a clean crop is partly lost there (docs/router_encoder.md). This places the kind's row on the statistics, as
`bank add` places a new kind (``lab.router.fit.place_pooled_row``, ``embedding_of: pooled``), every other row of
the bank unchanged: a logistic regression of the examples that carry the kind against every other example, drawn
as ``uir-lora encoder train`` draws them (the same shares and pictures: template renders, the training interiors
and ``--photos``; 224 px crops). Writes BANK_COPY's manifest; never run it on the shipped bank.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from uir_lora.commands.arguments import existing_path
from uir_lora.degrade import KINDS
from uir_lora.lab.router.fit import place_pooled_row
from uir_lora.lab.router.train_encoder import DamageDataset, EncoderTrainConfig, photo_views


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bank", type=existing_path, help="a copy of the bank, whose manifest is rewritten")
    parser.add_argument("--kind", required=True, choices=KINDS)
    parser.add_argument("--examples", type=int, default=8000, help="examples drawn (about 9 %% carry one kind)")
    parser.add_argument("--photos", type=existing_path, action="append", default=[])
    parser.add_argument("--short-shake-share", type=float, default=0.35)
    parser.add_argument("--route-margin", type=float, help="default: calibrated as `bank add` does")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if Path(args.bank).resolve() == (Path(__file__).parent.parent / "lora_bank" / "embedded-ffdnet").resolve():
        parser.error("name a copy of the bank: this rewrites its manifest")
    torch.set_num_threads(args.threads)
    # the shares of the encoder refits in docs/router_encoder.md
    config = EncoderTrainConfig(crop=224, seed=args.seed, clean_share=0.35, wide_share=0.5, finish_share=0.8,
                                short_shake_share=args.short_shake_share, photo_dirs=[str(p) for p in args.photos])
    groups, _ = photo_views(config.photo_dirs, config.crop, config.seed)
    draws = DamageDataset(groups, config, args.examples, KINDS)
    row = KINDS.index(args.kind)
    positives, negatives = [], []
    start = time.perf_counter()
    for index in range(args.examples):
        image, presence, _, _ = draws[index]
        if presence[row] > 0:
            positives.append(image[None])
        else:
            present = [KINDS[k] for k in range(len(KINDS)) if presence[k] > 0]
            negatives.append((present[0] if present else "clean", image[None]))
    _, report = place_pooled_row(args.bank, args.kind, positives, negatives, args.route_margin)
    print(f"{args.kind}: {report} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
