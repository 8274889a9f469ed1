"""Routing on held-out photos: the trained encoder (router/trained.py) beside the shipped ImageNet router.

    python benchmarks/router_encoder.py --bank lora_bank/embedded-ffdnet --encoder FILE \
        [--routers imagenet,trained,NAME=BANK_DIR] [--checkset-root DIR] [--out docs/results/router_encoder.json]

``imagenet``: ``--bank`` as it is; ``trained``: ``--encoder`` installed into a copy of it; ``NAME=BANK_DIR``:
another bank as it is (e.g. one whose router is presence heads, ``uir-lora train-presence``).

Photos: the 9 validation interiors and the 8 scikit-image / scikit-learn photos (scenes no router
was trained on), area-downscaled to at most ``--max-side`` px. Damage:
- ``checkset``: the check set's own synthesis (benchmarks/checkset/synthesis.py, written apart from both
  training implementations and never trained on), at its mild / moderate / strong levels, when
  importable (``--checkset-root``: the checkout that holds it);
- ``degrade_alt``: the second training implementation at severity 0.5 (the trained encoder saw it in
  training, on other photos; the ImageNet router was fitted on uir_lora.degrade only).
Scores: top-1 per kind and level (noise and Poisson noise also counted as one, "lenient"); both kinds in
the top 2 for five mixtures at the moderate level; clean photos: routed to ``clean`` first, and
PSNR(output, input) through the automatic restore (``pipeline.restore``, the same call as
``uir-lora restore``). The trained encoder is installed into a temporary copy of the bank.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package

from uir_lora import pipeline  # noqa: E402
from uir_lora.bank.store import open_bank  # noqa: E402
from uir_lora.degrade import CANONICAL_ORDER, KINDS, same_damage  # noqa: E402
from uir_lora.lab.evaluate.metrics import psnr  # noqa: E402

LEVELS = ("mild", "moderate", "strong")
ALT_SEVERITY = {"moderate": 0.5}
MIXTURES = (("noise", "jpeg"), ("low_light", "noise"), ("haze", "noise"), ("motion_blur", "jpeg"), ("rain", "haze"))
Degrader = Callable[[torch.Tensor, Sequence[str], str, int], torch.Tensor]
SOURCE_LEVELS = {"checkset": LEVELS, "degrade_alt": tuple(ALT_SEVERITY)}


def held_out_photos(max_side: int) -> list[tuple[str, torch.Tensor]]:
    from uir_lora.lab.evaluate.datasets import scene_photos
    from uir_lora.lab.router.data import whole_split_photos

    names, photos, _ = whole_split_photos("val")
    out = []
    for name, image in [*zip(names, photos), *scene_photos()]:
        scale = max_side / max(image.shape[-2:])
        if scale < 1:
            size = (round(image.shape[-2] * scale), round(image.shape[-1] * scale))
            image = torch.nn.functional.interpolate(image, size=size, mode="area")
        out.append((name, image.clamp(0, 1)))
    return out


def alt_degrader() -> Degrader:
    from uir_lora.lab.degrade_alt import degrade

    def apply(image: torch.Tensor, kinds: Sequence[str], level: str, seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return degrade(image, list(kinds), generator=gen, severity=ALT_SEVERITY[level]).clamp(0, 1)

    return apply


def checkset_degrader(root: Path | None) -> Degrader | None:
    if root is not None:
        sys.path.insert(0, str(root))
    try:
        synthesis = importlib.import_module("benchmarks.checkset.synthesis")
    except ImportError:
        return None

    def apply(image: torch.Tensor, kinds: Sequence[str], level: str, seed: int) -> torch.Tensor:
        rng = np.random.default_rng(seed)
        array = image[0].permute(1, 2, 0).numpy().astype(np.float32)
        for kind in [k for k in CANONICAL_ORDER if k in kinds]:
            array = np.clip(synthesis.DEGRADATIONS[kind](array, rng, LEVELS.index(level)), 0, 1)
        return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None].float()

    return apply


def install_trained(bank: Path, encoder: Path, folder: Path) -> Path:
    from uir_lora.router.trained import install_encoder

    copy = folder / bank.name
    shutil.copytree(bank, copy)
    install_encoder(copy, encoder)
    return copy


def routed(bank, images: list[torch.Tensor]) -> list[dict]:
    out = []
    for image in images:
        (result,) = pipeline.estimate(bank, image)
        order = sorted(result.similarities, key=lambda n: (-result.weights.get(n, 0.0), -result.similarities[n]))
        out.append({"top": order[:2], "weights": {k: round(v, 3) for k, v in result.weights.items()},
                    "unknown": result.unknown, "confidence": round(result.confidence, 3)})
    return out


def share(hits: Sequence[bool]) -> float:
    return round(sum(hits) / max(1, len(hits)), 4)


def evaluate_router(bank_dir: Path, photos, degraders: dict[str, Degrader], log) -> dict:
    bank = open_bank(bank_dir)
    backbone = pipeline.default_backbone()
    result: dict = {"bank": str(bank_dir), "encoder": bank.manifest.encoder.name}
    for source, degrade in degraders.items():
        singles: dict[str, dict[str, list[bool]]] = {}
        lenient: list[bool] = []
        unknown = 0
        levels = SOURCE_LEVELS[source]
        for k, kind in enumerate(KINDS):
            for level in levels:
                images = [degrade(image, [kind], level, 1000 * p + 10 * k + LEVELS.index(level))
                          for p, (_, image) in enumerate(photos)]
                answers = routed(bank, images)
                singles.setdefault(kind, {})[level] = [a["top"][0] == kind for a in answers]
                lenient += [same_damage(a["top"][0], kind) for a in answers]
                unknown += sum(a["unknown"] for a in answers)
            log(f"{source} {kind}: " + ", ".join(f"{lv} {share(singles[kind][lv]):.2f}" for lv in levels))
        mixtures = {}
        for m, pair in enumerate(MIXTURES):
            images = [degrade(image, pair, "moderate", 7000 + 1000 * p + m) for p, (_, image) in enumerate(photos)]
            answers = routed(bank, images)
            mixtures["+".join(pair)] = share([set(pair) <= set(a["top"]) for a in answers])
        all_hits = [hit for kind in singles.values() for hits in kind.values() for hit in hits]
        strong = [hit for kind in singles.values() for lv in ("moderate", "strong") if lv in kind for hit in kind[lv]]
        result[source] = {
            "top1": share(all_hits), "top1_moderate_strong": share(strong), "top1_lenient": share(lenient),
            "per_kind": {kind: share([h for hits in by_level.values() for h in hits])
                         for kind, by_level in singles.items()},
            "per_kind_level": {kind: {lv: share(hits) for lv, hits in by_level.items()}
                               for kind, by_level in singles.items()},
            "mixtures_top2": mixtures, "mixtures_top2_mean": round(statistics.mean(mixtures.values()), 4),
            "unknown_warnings": unknown, "images": len(all_hits)}
    clean_answers = routed(bank, [image for _, image in photos])
    scores = []
    for _, image in photos:
        out, _ = pipeline.restore(image, backbone, bank, mode="override")
        scores.append(round(min(psnr(out, image), 99.0), 2))  # identical images: capped, not inf
    result["clean"] = {"routed_clean": share([a["top"][0] == "clean" for a in clean_answers]),
                       "psnr": scores, "psnr_median": statistics.median(scores),
                       "psnr_at_least_40": share([s >= 40 for s in scores]), "psnr_min": min(scores),
                       "routes": {name: a["top"][0] for (name, _), a in zip(photos, clean_answers)}}
    log(f"clean: routed clean {result['clean']['routed_clean']:.2f}, PSNR median {result['clean']['psnr_median']}, "
        f"min {result['clean']['psnr_min']}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bank", type=Path, default=Path("lora_bank/embedded-ffdnet"))
    parser.add_argument("--encoder", type=Path, help="the trained encoder to install in a copy of the bank")
    parser.add_argument("--routers", default="imagenet,trained")
    parser.add_argument("--checkset-root", type=Path, help="checkout holding benchmarks/checkset/")
    parser.add_argument("--max-side", type=int, default=512)
    parser.add_argument("--max-photos", type=int)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    photos = held_out_photos(args.max_side)[: args.max_photos]
    degraders = {"degrade_alt": alt_degrader()}
    checkset = checkset_degrader(args.checkset_root)
    if checkset is not None:
        degraders = {"checkset": checkset, **degraders}
    results = json.loads(args.out.read_text()) if args.out and args.out.is_file() else {}
    with tempfile.TemporaryDirectory() as folder:
        for router in args.routers.split(","):
            start = time.perf_counter()
            router, _, other = router.partition("=")
            if other:
                bank = Path(other)
            elif router == "trained":
                bank = install_trained(args.bank, args.encoder, Path(folder))
            elif router == "imagenet":
                bank = args.bank
            else:
                parser.error(f"--routers: {router!r} is not imagenet, trained or NAME=BANK_DIR")
            results[router] = evaluate_router(bank, photos, degraders, print)
            results[router]["seconds"] = round(time.perf_counter() - start)
            results[router]["photos"] = [name for name, _ in photos]
            if args.out:
                args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({r: {k: v for k, v in results[r].items() if k not in ("photos",)} for r in results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
