"""Per-region vs global routing on images whose halves carry different degradations.

Each validation photo (the LoRA training's held-out split, downscaled x2, a textured crop) is degraded
twice, kind A and kind B, and stitched: A on the left half, B on the right. Every image is restored
with global routing (one composition for the image), per-region routing (``spatial=True``) and an
oracle (each half restored with its own kind's LoRA at weight 1, stitched). PSNR is on the whole
image against the clean photo.

    nice -n 10 python tools/eval_spatial.py --out docs/results/spatial_eval.json --pictures docs/img
    python tools/eval_spatial.py --random-bank --photos 1 --pairs haze:noise   # smoke test
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from uir_lora.degrade import degrade
from uir_lora.lab.evaluate.metrics import psnr
from uir_lora.pipeline import DEFAULT_BANK, default_backbone, estimate_spatial, load_bank, restore
from uir_lora.router.spatial import DEFAULT_WINDOW, region_map_picture

PAIRS = ("haze:noise", "low_light:jpeg", "rain:defocus_blur", "motion_blur:snow", "color_cast:noise")


def photos(count: int, height: int, width: int) -> list[torch.Tensor]:
    """Crops of the validation photos (never seen in LoRA training), downscaled x2; of 9 crop positions
    the most textured (mean gradient) is kept, so the halves are not a bare wall."""
    from uir_lora.lab.train.data import _downscale, split_photos

    out = []
    for path in split_photos()[1][:count]:
        array = np.asarray(_downscale(Image.open(path).convert("RGB"), 2.0)).astype(np.float32) / 255
        if array.shape[0] < height or array.shape[1] < width:
            continue
        grey = array.mean(axis=2)
        texture = np.abs(np.diff(grey, axis=0))[:, :-1] + np.abs(np.diff(grey, axis=1))[:-1]
        corners = [(int(t), int(left)) for t in np.linspace(0, array.shape[0] - height, 3)
                   for left in np.linspace(0, array.shape[1] - width, 3)]
        top, left = max(corners, key=lambda c: texture[c[0] : c[0] + height, c[1] : c[1] + width].mean())
        crop = array[top : top + height, left : left + width]
        out.append(torch.from_numpy(crop.copy()).permute(2, 0, 1)[None])
    return out


def stitched(clean: torch.Tensor, left: str, right: str, seed: int, severity: float) -> torch.Tensor:
    """Kind ``left`` on the left half, ``right`` on the right (each applied to the whole photo first,
    so haze depth, rain streaks and JPEG blocks are what a whole photo would get)."""
    half = clean.shape[-1] // 2
    a = degrade(clean, left, generator=torch.Generator().manual_seed(seed), severity=severity)
    b = degrade(clean, right, generator=torch.Generator().manual_seed(seed + 1), severity=severity)
    return torch.cat([a[..., :half], b[..., half:]], dim=-1).clamp(0, 1)


def random_bank(root: Path, names: list[str]):
    from uir_lora.bank.store import open_bank
    from uir_lora.lab.testing.banks import make_random_bank
    from uir_lora.router.encoder import DegradationEncoder

    return open_bank(make_random_bank(root, default_backbone(), names, dim=DegradationEncoder().dim,
                                      conditioning={"sigma": 15 / 255}))


def strip(parts: list[np.ndarray], path: Path, height: int = 200) -> None:
    """Side-by-side JPEG of same-height pictures (docs size budget: a few hundred KB)."""
    scaled = [Image.fromarray(p).resize((round(p.shape[1] * height / p.shape[0]), height)) for p in parts]
    canvas = Image.new("RGB", (sum(s.width for s in scaled) + 4 * (len(scaled) - 1), height), (255, 255, 255))
    x = 0
    for s in scaled:
        canvas.paste(s, (x, 0))
        x += s.width + 4
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, quality=85)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    return (image[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)


def evaluate_case(bank, backbone, clean, left, right, args, seed) -> tuple[dict, dict]:
    mixed = stitched(clean, left, right, seed, args.severity)
    half = clean.shape[-1] // 2
    t0 = time.perf_counter()
    glob, comps = restore(mixed, backbone, bank)
    t1 = time.perf_counter()
    spat, _ = restore(mixed, backbone, bank, spatial=True, window=args.window)
    t2 = time.perf_counter()
    if args.oracle:
        oracle_l, _ = restore(mixed, backbone, bank, manual={left: 1.0})
        oracle_r, _ = restore(mixed, backbone, bank, manual={right: 1.0})
        oracle = torch.cat([oracle_l[..., :half], oracle_r[..., half:]], dim=-1)
    (regions,) = estimate_spatial(bank, mixed, args.window)
    maps = regions.full_maps()
    names = regions.names
    row = {
        "pair": f"{left}:{right}", "seed": seed,
        "psnr_input": psnr(mixed, clean), "psnr_global": psnr(glob, clean), "psnr_spatial": psnr(spat, clean),
        "psnr_oracle": psnr(oracle, clean) if args.oracle else float("nan"),
        "seconds_global": t1 - t0, "seconds_spatial": t2 - t1,
        "global_weights": {k: round(v, 3) for k, v in comps[0].weights.items()},
        "left_share_on_left_kind": float(maps[names.index(left), :, :half].mean()),
        "right_share_on_right_kind": float(maps[names.index(right), :, half:].mean()),
    }
    pictures = {"mixed": mixed, "global": glob, "spatial": spat, "map": region_map_picture(mixed, regions)}
    return row, pictures


def summarise(rows: list[dict]) -> dict:
    out = {}
    for pair in dict.fromkeys(r["pair"] for r in rows):
        sel = [r for r in rows if r["pair"] == pair]
        out[pair] = {k: round(statistics.mean(r[k] for r in sel), 3) for k in
                     ("psnr_input", "psnr_global", "psnr_spatial", "psnr_oracle", "left_share_on_left_kind",
                      "right_share_on_right_kind", "seconds_global", "seconds_spatial")}
        out[pair]["gain_db"] = round(out[pair]["psnr_spatial"] - out[pair]["psnr_global"], 3)
        out[pair]["n"] = len(sel)
    gains = [r["psnr_spatial"] - r["psnr_global"] for r in rows]
    out["all"] = {"gain_db_mean": round(statistics.mean(gains), 3), "gain_db_min": round(min(gains), 3),
                  "wins": sum(g > 0 for g in gains), "n": len(gains)}
    return out


def markdown(summary: dict) -> str:
    lines = ["| left : right | n | input dB | global dB | per-region dB | gain dB | oracle dB | map on left kind | "
             "map on right kind |", "|---|---|---|---|---|---|---|---|---|"]
    for pair, s in summary.items():
        if pair != "all":
            lines.append(f"| {pair.replace(':', ' : ')} | {s['n']} | {s['psnr_input']:.2f} | {s['psnr_global']:.2f} | "
                         f"{s['psnr_spatial']:.2f} | **{s['gain_db']:+.2f}** | {s['psnr_oracle']:.2f} | "
                         f"{s['left_share_on_left_kind']:.2f} | {s['right_share_on_right_kind']:.2f} |")
    a = summary["all"]
    lines.append(f"\nAll {a['n']} images: mean gain {a['gain_db_mean']:+.2f} dB, worst {a['gain_db_min']:+.2f} dB, "
                 f"per-region better on {a['wins']}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bank", default=DEFAULT_BANK)
    p.add_argument("--bank-dir", action="append", default=[])
    p.add_argument("--random-bank", action="store_true", help="untrained random LoRAs (smoke test only)")
    p.add_argument("--pairs", default=",".join(PAIRS), help="left:right kinds, comma separated")
    p.add_argument("--photos", type=int, default=9)
    p.add_argument("--size", default="384x768", help="HxW centre crop")
    p.add_argument("--severity", type=float, default=0.6)
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW)
    p.add_argument("--oracle", action="store_true", help="also restore each half with its own kind's LoRA")
    p.add_argument("--out", type=Path, help="JSON with every row and the per-pair summary")
    p.add_argument("--pictures", type=Path, help="folder for one example strip per pair")
    p.add_argument("--picture-photo", type=int, default=2, help="which photo the strips show (default %(default)s)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    pairs = [tuple(pair.split(":")) for pair in args.pairs.split(",")]
    kinds = sorted({k for pair in pairs for k in pair})
    tmp = tempfile.TemporaryDirectory()
    bank = random_bank(Path(tmp.name), kinds) if args.random_bank else load_bank(args.bank, args.bank_dir)
    missing = [k for k in kinds if k not in bank.manifest.names]
    pairs = [pair for pair in pairs if not set(pair) & set(missing)]
    print(f"bank {bank.manifest.name}: {len(bank.manifest.names)} LoRAs; skipped kinds not in it: {missing}",
          file=sys.stderr)
    backbone = default_backbone()
    height, width = map(int, args.size.split("x"))
    rows = []
    for index, clean in enumerate(photos(args.photos, height, width)):
        for left, right in pairs:
            row, pics = evaluate_case(bank, backbone, clean, left, right, args, seed=1000 * index)
            rows.append(row)
            print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
            if args.pictures and index == args.picture_photo:
                strip([to_uint8(pics["mixed"]), to_uint8(pics["global"]), to_uint8(pics["spatial"]), pics["map"]],
                      args.pictures / f"spatial_{left}_{right}.jpg")
    summary = summarise(rows)
    print(json.dumps(summary, indent=1))
    print(markdown(summary))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "summary": summary,
                                        "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
