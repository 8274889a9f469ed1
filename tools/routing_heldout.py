"""Routing of banks side by side on held-out interiors, damaged by both training syntheses.

    python tools/routing_heldout.py shipped=lora_bank/embedded-ffdnet candidate=runs/presence/bank [--json F]

The 9 validation interiors (never trained on), each clean, with every kind by ``uir_lora.degrade`` (standard)
and by ``uir_lora.lab.degrade_alt`` at severities 0.2 / 0.5 / 0.8, and the five benchmark pairs at 0.5 by
both (seeds fixed per photo and case). The router features are computed once per image and encoder and
scored by every bank with that encoder (a bank with a trained encoder file gets its own).
Prints top-1 per kind, severity and synthesis (members of one ``SAME_DAMAGE`` group count as one), both kinds
of a pair in the top 2, and clean photos routed to ``clean``. ``--syntheses wide`` draws the standard
synthesis's wide profile instead (the field's kernels, then a camera's faint noise and mild JPEG, which every
real photo carries). The check set stays out of the choice (benchmarks/wild.py measures it).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import torch

from uir_lora.bank.store import open_bank
from uir_lora.degrade import same_damage
from uir_lora.lab.evaluate.heldout import DEFAULT_SYNTHESES, damaged, heldout_cases, named_banks
from uir_lora.lab.evaluate.publish import write_json
from uir_lora.lab.train.data import load_validation_images
from uir_lora.router.router import Router

SEVERITIES = (0.2, 0.5, 0.8)


def ranked(router: Router, image: torch.Tensor, raw: torch.Tensor, whole: torch.Tensor | None) -> list[str]:
    """The kinds the bank's router keeps for ``image``, strongest first (``clean`` when it keeps none)."""
    defaults = router.manifest.router
    scores = router.feature_scores(raw, whole, router.exposure_factors(image), sky=router.night_sky(image))
    weights = router.weights(scores.similarities, defaults.top_k, defaults.temperature, defaults.normalisation,
                             router.alternative_choice(image))[0]
    kept = sorted((float(w), name) for name, w in zip(router.names, weights) if w > 0)
    return [name for _, name in reversed(kept)] or ["clean"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("banks", nargs="+", help="NAME=BANK_DIR, two or more")
    parser.add_argument("--json", type=Path, help="write the counts here")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--syntheses", default=",".join(DEFAULT_SYNTHESES),
                        help="comma-separated: standard, degrade_alt, wide (the wide profile with a camera finish)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    routers = {}
    for name, folder in named_banks(args.banks).items():
        bank = open_bank(folder)
        routers[name] = Router(bank.manifest, bank_dir=bank.root)
    counts: dict[str, dict[str, list[int]]] = {name: defaultdict(lambda: [0, 0]) for name in routers}
    photos = load_validation_images()
    for index, photo in enumerate(photos):
        for number, case in enumerate(heldout_cases(SEVERITIES, args.syntheses.split(","))):
            kinds, level, synthesis = case
            image = damaged(photo, case, 1000 * index + number)
            raws: dict[str, torch.Tensor | None] = {}
            for name, router in routers.items():
                pooled = bool(router.pooled_index)  # a kind placed by `bank add` reads the pooled statistics too
                key = f"{router.manifest.encoder!r} {pooled}"  # the spec names the weights and the feature
                if key not in raws:
                    raws[key] = router.encoder.features(image, pooled=pooled)
                view = f"{key} {router.manifest.router.whole_view_side}" if router.whole_view_index else None
                if view and view not in raws:
                    raws[view] = router.whole_view_features(image)
                order = ranked(router, image, raws[key], raws[view] if view else None)
                if not kinds:
                    keys, hit = ["clean"], order[0] == "clean"
                elif len(kinds) == 1:
                    keys = [kinds[0], f"single kinds at {level}", f"single kinds by {synthesis}", "single kinds"]
                    hit = same_damage(order[0], kinds[0])
                else:
                    keys = ["+".join(kinds), "pairs, both in the top 2"]
                    hit = all(any(same_damage(named, kind) for named in order[:2]) for kind in kinds)
                for key in keys:
                    counts[name][key][0] += hit
                    counts[name][key][1] += 1
        print(f"photo {index + 1}/{len(photos)}", flush=True)
    print("| case | " + " | ".join(routers) + " |\n|---|" + "---:|" * len(routers))
    for key in counts[next(iter(routers))]:
        cells = [f"{100 * counts[name][key][0] / counts[name][key][1]:.1f} %" for name in routers]
        print(f"| {key} | " + " | ".join(cells) + " |")
    if args.json:
        write_json(args.json, {name: dict(table) for name, table in counts.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
