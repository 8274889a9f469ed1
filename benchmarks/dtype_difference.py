"""How far a lower-precision backbone moves the output: 8-bit levels against float32 (docs/command_line.md).

    python benchmarks/dtype_difference.py                       # bfloat16 on the CPU, the shipped photos
    python benchmarks/dtype_difference.py --device cuda --dtype float16
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from uir_lora.backbones.placement import DTYPES, resolve_device, resolve_dtype
from uir_lora.backbones.registry import load_backbone
from uir_lora.images import load_image
from uir_lora.pipeline import DEFAULT_BANK, load_bank, restore

PHOTOS = sorted((Path(__file__).resolve().parents[1] / "workflows" / "inputs").glob("*_*.*"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=list(DTYPES))
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    low = resolve_dtype(args.dtype, device)
    bank = load_bank(DEFAULT_BANK)
    for photo in PHOTOS:
        image = load_image(photo)
        full, reduced = (restore(image, load_backbone("embedded-ffdnet", device=device, dtype=dtype), bank)[0]
                         for dtype in (torch.float32, low))
        levels = ((full - reduced).abs() * 255).flatten()
        print(f"{photo.name}: {args.dtype} vs float32 on {device}: mean {levels.mean():.2f}, "
              f"99th percentile {levels.quantile(0.99):.2f}, max {levels.max():.2f} 8-bit levels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
