"""Measuring the router: top-1 on held-out single kinds (both degradation implementations),
confusion matrices, the unknown-degradation warning, and mixed pairs restored with the real bank.

    python -m uir_lora.lab.router.evaluate --bank lora_bank/embedded-ffdnet --out docs/img [--pairs]

Every number uses fresh draws (``EVAL_SEED``): other crops of the validation photos and other
degradation parameters than the ones train-router calibrated the threshold on.
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from ...degrade import same_damage
from ...router.router import Router
from .data import FRAME_SIDES, at_photo_scale
from .fit import RouterFitConfig, bank_features

EVAL_SEED = 100
EVAL_PER_PHOTO = 2  # crops per validation photo and kind: 18 images per kind
UNKNOWN_KINDS = ("mosaic", "inversion", "vignetting", "salt_pepper")
LARGE_FRAME = 2880  # shorter side of a 12 MP camera photo (2880 x 4320): drops and flakes sized for it


def unknown_degrade(image: torch.Tensor, kind: str, *, generator: torch.Generator) -> torch.Tensor:
    """Degradations the bank has no LoRA for (same call shape as uir_lora.degrade.degrade)."""
    u = float(torch.rand((), generator=generator))
    if kind == "mosaic":  # pixelation: block averages, 6-16 px blocks
        block = 6 + int(u * 10)
        small = F.avg_pool2d(image, block, ceil_mode=True)
        return F.interpolate(small, scale_factor=block, mode="nearest")[..., : image.shape[-2], : image.shape[-1]]
    if kind == "inversion":  # colour negative, partly blended
        return (1 - image) * (0.7 + 0.3 * u) + image * (0.3 - 0.3 * u)
    if kind == "vignetting":  # strong radial fall-off towards the corners
        h, w = image.shape[-2:]
        y, x = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        return image * (1 - (0.6 + 0.35 * u) * ((x**2 + y**2) / 2).clamp(0, 1) ** 0.8)
    if kind == "salt_pepper":  # impulse noise, 2-12 % of pixels
        hit = torch.rand(image.shape[-2:], generator=generator) < 0.02 + 0.1 * u
        salt = torch.rand(image.shape[-2:], generator=generator) < 0.5
        return torch.where(hit, salt.float().expand_as(image), image)
    raise ValueError(f"unknown kind {kind!r}; expected one of {UNKNOWN_KINDS}")


def confusion(labels: torch.Tensor, predicted: torch.Tensor, count: int) -> np.ndarray:
    matrix = np.zeros((count, count), dtype=int)
    np.add.at(matrix, (labels.numpy(), predicted.numpy()), 1)
    return matrix


def confusion_png(matrix: np.ndarray, names: Sequence[str], title: str, path: Path, cell: int = 34) -> Path:
    """Row-normalised confusion matrix as a PNG (PIL only): rows = true kind, columns = router's top-1."""
    font = ImageFont.load_default(size=12)
    left, top = 120, 130
    size = (left + cell * len(names) + 10, top + cell * len(names) + 10)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.text((8, 6), title, fill="black", font=font)
    rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    for i, name in enumerate(names):
        draw.text((8, top + i * cell + cell // 3), name, fill="black", font=font)
        label = Image.new("RGBA", (110, 14), (255, 255, 255, 0))
        ImageDraw.Draw(label).text((0, 0), name, fill="black", font=font)
        rotated = label.rotate(90, expand=True)
        image.paste(rotated, (left + i * cell + cell // 3, top - 115), rotated)
        for j in range(len(names)):
            share = rows[i, j]
            shade = int(255 * (1 - share))
            colour = (shade, shade, 255) if i == j else (255, shade, shade)
            box = (left + j * cell, top + i * cell, left + (j + 1) * cell - 1, top + (i + 1) * cell - 1)
            draw.rectangle(box, fill=colour, outline=(220, 220, 220))
            if matrix[i, j]:
                draw.text((box[0] + 4, box[1] + cell // 3), f"{share:.0%}"[:4], font=font,
                          fill="white" if share > 0.6 else "black")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def single_kinds(bank_dir: Path, implementation: str, cache_dir: Path | None = None,
                 severity: float | None = None) -> dict:
    """Top-1 (strict and lenient), per-kind accuracy, confusion and unknown false alarms on fresh draws."""
    router = Router.of_folder(bank_dir)
    manifest = router.manifest
    names = manifest.names
    config = RouterFitConfig(seed=EVAL_SEED, val_per_photo=EVAL_PER_PHOTO)
    raw, labels = bank_features(router.encoder, names, "val", config, implementation, cache_dir, severity)
    scores = router.feature_scores(raw)
    predicted = scores.similarities.argmax(dim=-1)
    lenient = [same_damage(names[p], names[t]) for p, t in zip(predicted, labels)]
    matrix = confusion(labels, predicted, len(names))
    alarms = router.unknown_flags(scores).float().mean().item()
    return {"implementation": implementation, "examples": int(len(labels)),
            "top1": float((predicted == labels).float().mean()), "top1_lenient": float(np.mean(lenient)),
            "per_kind": {n: float(matrix[i, i] / max(matrix[i].sum(), 1)) for i, n in enumerate(names)},
            "false_alarm": alarms, "confusion": matrix.tolist(), "names": names}


def unknown_hits(bank_dir: Path, cache_dir: Path | None = None) -> dict:
    """Share of images of each unknown kind that the router flags as unknown."""
    from .data import encode_class, photo_crops, photo_split

    router = Router.of_folder(bank_dir)
    manifest = router.manifest
    crops = photo_crops(photo_split()[1], EVAL_PER_PHOTO, router.encoder.spec.crop, seed=EVAL_SEED + 1)
    hits = {}
    for kind in UNKNOWN_KINDS:
        raw = encode_class(router.encoder, crops, kind, unknown_degrade, EVAL_SEED,
                           cache_key={"unknown": kind, "per_photo": EVAL_PER_PHOTO, "crop_seed": EVAL_SEED + 1},
                           cache_dir=cache_dir)
        scores = router.feature_scores(raw)
        hits[kind] = float(router.unknown_flags(scores).float().mean())
        hits[f"{kind}_top1"] = manifest.names[int(scores.similarities.argmax(dim=-1).mode().values)]
    return hits


def held_out_photos(scenes: bool = False) -> tuple[list[str], list[torch.Tensor], dict]:
    """(names, whole photos [1,3,H,W], cache key) of a whole-photo test set: the 9 validation photos of the
    fixed split (indoor, 640 or 960 px wide) or, with ``scenes``, the 8 scikit-image / scikit-learn photos
    at native size (portrait, cat, coffee, rocket, street, starfield, temple, flower), never trained on
    and unlike the indoor training photos."""
    if scenes:
        from ..evaluate.datasets import scene_photos

        names, photos = map(list, zip(*scene_photos()))
        return names, photos, {"photos": names}
    from .data import whole_split_photos

    return whole_split_photos("val")


def whole_photos(bank_dir: Path, implementation: str, draws: int = 2, cache_dir: Path | None = None,
                 severity: float | None = None, frame_side: int | None = None, scenes: bool = False) -> dict:
    """The router as users meet it: whole held-out photos degraded as photos (``held_out_photos``),
    routed through the encoder's crops at native resolution (``Router.scores`` on the image), ``draws``
    per photo and kind. Also the unknown warning's false alarms and its hits on UNKNOWN_KINDS
    (``severity`` None: each known kind's severity drawn from the full range; else fixed, no unknowns).
    ``frame_side``: degrade each photo as a window of a photo this many pixels on its shorter side
    (raindrops, flakes and haze depth sized for it; ``uir_lora.degrade`` only), as a camera photo
    of that size shows them to the router's native-resolution crops."""
    if frame_side is not None and implementation != "degrade":
        raise ValueError("frame_side needs uir_lora.degrade (degrade_alt sizes its drops by the image it is given)")
    from ...degrade import degrade as degrade_main
    from ..degrade_alt import degrade as degrade_alt
    from .data import encode_photos

    router = Router.of_folder(bank_dir)
    manifest = router.manifest
    names = manifest.names
    photo_names, photos, key = held_out_photos(scenes)
    synthesise = degrade_alt if implementation == "degrade_alt" else degrade_main
    key = {"implementation": implementation, **key}
    if severity is not None:
        synthesise, key["severity"] = functools.partial(synthesise, severity=severity), severity
    if frame_side is not None:
        synthesise, key["frame_side"] = functools.partial(synthesise, frame_side=frame_side), frame_side

    def features_of(name: str) -> torch.Tensor:
        return encode_photos(router.encoder, photos, name, unknown_degrade if name in UNKNOWN_KINDS else synthesise,
                             EVAL_SEED + 50, draws, cache_dir=cache_dir, cache_key=key)

    known = [features_of(name) for name in names]
    labels = torch.cat([torch.full((len(f),), i) for i, f in enumerate(known)])
    scores = router.feature_scores(torch.cat(known))
    predicted = scores.similarities.argmax(dim=-1)
    matrix = confusion(labels, predicted, len(names))
    right = (predicted == labels).view(len(names), len(photos), draws)  # rows are class, photo, draw
    result = {"implementation": implementation, "images": int(len(labels)), "draws": draws,
              "top1": float(right.float().mean()),
              "per_kind": {n: float(matrix[i, i] / max(matrix[i].sum(), 1)) for i, n in enumerate(names)},
              "per_photo": {n: float(right[:, i].float().mean()) for i, n in enumerate(photo_names)},
              "false_alarm": float(router.unknown_flags(scores).float().mean()),
              "confusion": matrix.tolist(), "names": names}
    if implementation == "degrade" and severity is None and frame_side is None:
        result["unknown_hits"] = {}
        for kind in UNKNOWN_KINDS:
            flags = router.unknown_flags(router.feature_scores(features_of(kind)))
            result["unknown_hits"][kind] = float(flags.float().mean())
    return result


def _degrade_pair(image: torch.Tensor, name: str, *, generator: torch.Generator) -> torch.Tensor:
    from ...degrade import degrade

    return at_photo_scale(degrade)(image, name.split("+"), generator=generator)


def mixture_routing(bank_dir: Path, cache_dir: Path | None = None) -> dict:
    """Held-out mixed pairs, routing only: how often the top-K keeps both true kinds, and their weights."""
    from ..evaluate.harness import MIXED_PAIRS
    from .data import encode_class, photo_crops, photo_split

    router = Router.of_folder(bank_dir)
    manifest = router.manifest
    defaults = manifest.router
    crops = photo_crops(photo_split()[1], EVAL_PER_PHOTO, router.encoder.spec.crop, seed=EVAL_SEED + 1)
    rows = {}
    for pair in MIXED_PAIRS:
        if not set(pair) <= set(manifest.names):
            continue
        raw = encode_class(router.encoder, crops, "+".join(pair), _degrade_pair, EVAL_SEED + 7,
                           cache_key={"evalpair": list(pair), "crop_seed": EVAL_SEED + 1,
                                      "frame_sides": list(FRAME_SIDES)}, cache_dir=cache_dir)
        weights = router.weights(router.feature_scores(raw).similarities, min(defaults.top_k, len(manifest.names)),
                                 defaults.temperature, defaults.normalisation)
        first, second = (weights[:, manifest.names.index(kind)] for kind in pair)
        rows["+".join(pair)] = {"both_kept": float(((first > 0) & (second > 0)).float().mean()),
                                "weight_first": float(first.mean()), "weight_second": float(second.mean()),
                                "images": int(len(raw))}
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bank", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    parser.add_argument("--json", type=Path, default=Path("docs/results/router_results.json"))
    parser.add_argument("--severities", type=float, nargs="*", default=[],
                        help="also measure top-1 with every kind at these fixed severities (0 mild .. 1 strong)")
    parser.add_argument("--pairs", action="store_true", help="also restore the mixed pairs (needs trained LoRAs)")
    parser.add_argument("--max-images", type=int, help="mixed pairs: use only the first N validation images")
    parser.add_argument("--reuse-pairs", type=Path, help="JSON of `python -m uir_lora.lab.router.pairs` to reuse")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results: dict = {}
    for implementation in ("degrade", "degrade_alt"):
        result = single_kinds(args.bank, implementation)
        confusion_png(np.array(result["confusion"]), result["names"],
                      f"router top-1, uir_lora.{implementation}: {result['top1']:.1%} "
                      f"(noise~poisson {result['top1_lenient']:.1%})",
                      args.out / f"router_confusion_{implementation}.png")
        results[implementation] = result
        print(f"{implementation}: top-1 {result['top1']:.3f} lenient {result['top1_lenient']:.3f} "
              f"false alarms {result['false_alarm']:.3f}", flush=True)
    if args.severities:
        results["by_severity"] = {}
        for severity in args.severities:
            row = single_kinds(args.bank, "degrade", severity=severity)
            results["by_severity"][f"{severity:g}"] = {k: row[k] for k in ("top1", "top1_lenient", "per_kind")}
            print(f"severity {severity:g}: top-1 {row['top1']:.3f} lenient {row['top1_lenient']:.3f}", flush=True)
    results["whole_photos"] = {}
    for scenes, what, picture in ((False, "whole photos", "photos"), (True, "other scenes", "scenes")):
        for implementation in ("degrade", "degrade_alt"):
            row = whole_photos(args.bank, implementation, scenes=scenes)
            confusion_png(np.array(row["confusion"]), row["names"],
                          f"router top-1, {what}, uir_lora.{implementation}: {row['top1']:.1%}",
                          args.out / f"router_confusion_{picture}_{implementation}.png")
            results["whole_photos"][f"scenes {implementation}" if scenes else implementation] = row
            print(f"{what}, {implementation}: top-1 {row['top1']:.3f} false alarms {row['false_alarm']:.3f} "
                  f"per photo { {k: round(v, 2) for k, v in row['per_photo'].items()} } "
                  f"{row.get('unknown_hits', '')}", flush=True)
    for severity in args.severities:
        row = whole_photos(args.bank, "degrade", severity=severity)
        results["whole_photos"][f"severity {severity:g}"] = {k: row[k] for k in ("top1", "per_kind", "false_alarm")}
        print(f"whole photos, severity {severity:g}: top-1 {row['top1']:.3f}", flush=True)
    row = whole_photos(args.bank, "degrade", frame_side=LARGE_FRAME)
    results["whole_photos"][f"frame {LARGE_FRAME}"] = {k: row[k] for k in ("top1", "per_kind", "false_alarm")}
    print(f"whole photos degraded as parts of {LARGE_FRAME} px photos: top-1 {row['top1']:.3f} "
          f"{ {k: round(v, 2) for k, v in row['per_kind'].items() if v < 0.9} }", flush=True)
    results["unknown"] = unknown_hits(args.bank)
    print("unknown hit rates", results["unknown"], flush=True)
    results["mixture_routing"] = mixture_routing(args.bank)
    print("mixture routing", json.dumps(results["mixture_routing"]), flush=True)
    if args.pairs:
        from .pairs import mixed_pairs

        previous = json.loads(args.reuse_pairs.read_text())["rows"] if args.reuse_pairs else None
        # Only the router-independent rows (best single, oracle grid) are reused: the router is what is measured.
        previous = previous and [{k: v for k, v in row.items() if not k.startswith("router")} for row in previous]
        results["pairs"] = mixed_pairs(args.bank, max_images=args.max_images, previous=previous)
        print(json.dumps(results["pairs"]["summary"], indent=1))
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
