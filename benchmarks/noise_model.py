"""How often the noise model (uir_lora/router/noise_model.py) names the noise a photo has.

Gaussian and Poisson noise drawn by each training synthesis (``uir_lora.degrade`` and
``uir_lora.lab.degrade_alt``) on training photos of the fixed split, at five severities; with ``--checkset``,
also the check set's own synthesis (benchmarks/checkset/, never used to choose anything) on its photos at its
three levels. Each cell: photos named right / photos measured (the rest: the model gives no answer, and the
router's stronger head decides).

    python benchmarks/noise_model.py --photos 24 --checkset --out docs/results/noise_model.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from uir_lora.router.noise_model import noise_member  # noqa: E402

SEVERITIES = (0.1, 0.3, 0.5, 0.7, 0.9)
SIDE = 384
KINDS = ("noise", "poisson_noise")


def cell(names: list[str | None], kind: str) -> dict:
    measured = [name for name in names if name is not None]
    return {"right": sum(name == kind for name in measured), "measured": len(measured), "photos": len(names)}


def training_syntheses(count: int) -> dict:
    from uir_lora.degrade import degrade
    from uir_lora.lab.degrade_alt import degrade as degrade_alt
    from uir_lora.lab.router.data import load_photos, photo_split

    photos = [photo[..., :SIDE, :SIDE] for photo in load_photos(photo_split()[0][:count])]
    results = {}
    for implementation, draw in (("degrade", degrade), ("degrade_alt", degrade_alt)):
        for kind in KINDS:
            for severity in SEVERITIES:
                names = []
                for index, photo in enumerate(photos):
                    generator = torch.Generator().manual_seed(31 * index + int(severity * 10))
                    names += noise_member(draw(photo, kind, generator=generator, severity=severity).clamp(0, 1))
                results[f"{implementation}/{kind}/{severity}"] = cell(names, kind)
                print(implementation, kind, severity, results[f"{implementation}/{kind}/{severity}"], flush=True)
    return results


def check_set() -> dict:
    import checkset
    from wild import check_photos

    from uir_lora.images import array_to_tensor

    names: dict[str, list[str | None]] = {}
    for index, (_, array) in enumerate(check_photos(512, None, with_scenes=True)):
        for kind in KINDS:
            for level in checkset.SEVERITIES:
                damaged = array_to_tensor(checkset.degrade(array, kind, level, seed=index))
                names.setdefault(f"checkset/{kind}/{level}", []).extend(noise_member(damaged))
    results = {key: cell(value, key.split("/")[1]) for key, value in names.items()}
    for key, value in results.items():
        print(key, value, flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=24, help="training photos per cell")
    parser.add_argument("--checkset", action="store_true", help="also the check set's own synthesis")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = training_syntheses(args.photos)
    if args.checkset:
        results |= check_set()
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
