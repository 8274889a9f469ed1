"""Write the training photos (template renders and training interiors) as files a GPU machine can read.

The data packages are too large to travel to a lent GPU machine; their photos, downscaled and saved
as JPEG q95, are small enough. The validation split is cached beside them (data/validation.pt).

    python tools/pack_training_photos.py            # -> data/train_photos/, data/validation.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from uir_lora.lab.train.data import DEFAULT_DATA_DIR, load_validation_images
from uir_lora.lab.train.joint import training_photos


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_DATA_DIR / "train_photos")
    parser.add_argument("--max-side", type=int, default=1024)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    photos = training_photos(max_side=args.max_side)
    for index, photo in enumerate(photos):
        image = Image.fromarray(photo)
        if max(image.size) > args.max_side:
            factor = max(image.size) / args.max_side
            image = image.resize((round(image.width / factor), round(image.height / factor)), Image.LANCZOS)
        image.save(args.out / f"photo_{index:04d}.jpg", quality=95)
    load_validation_images(args.out.parent)
    print(f"wrote {len(photos)} photos to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
