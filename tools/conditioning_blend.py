"""The composition's conditioning rule against a weighted mean, on held-out interiors (the second synthesis).

    python tools/conditioning_blend.py [--photos 9] [--json runs/conditioning_blend.json]

The 9 validation interiors (never trained on), damaged by ``uir_lora.lab.degrade_alt`` (noise at severity 0.3
and 0.7; Poisson noise, JPEG, low light, rain, snow, haze and the five benchmark pairs at 0.5; seeds fixed per
photo and case), restored automatically and, for the pairs, with both LoRAs at weight 1. Each restore runs
twice: with the shipped rule (``compose.composer.blend_conditioning``, FFDNet's sigma blended in variance)
and with the weighted mean it replaced. Prints the mean PSNR gain over the input per case and overall.
The check set stays out of the choice (benchmarks/wild.py measures it).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import torch

from uir_lora import pipeline
from uir_lora.backbones.base import Backbone
from uir_lora.compose.composer import Composition
from uir_lora.lab.degrade_alt import degrade as degrade_alt
from uir_lora.lab.evaluate.metrics import psnr
from uir_lora.lab.evaluate.publish import write_json
from uir_lora.lab.evaluate.report import mean_gain_lines
from uir_lora.lab.train.data import load_validation_images

CASES = [(("noise",), 0.3), (("noise",), 0.7), (("poisson_noise",), 0.5), (("jpeg",), 0.5), (("low_light",), 0.5),
         (("rain",), 0.5), (("snow",), 0.5), (("haze",), 0.5), (("noise", "jpeg"), 0.5), (("low_light", "noise"), 0.5),
         (("haze", "noise"), 0.5), (("motion_blur", "jpeg"), 0.5), (("haze", "rain"), 0.5)]
SEED = 9000


def weighted_mean(composition: Composition, backbone: Backbone) -> dict[str, float]:
    """The rule before: each key the weight-averaged value of the LoRAs that record it."""
    blended = dict(backbone.default_conditioning)
    total = sum(abs(w) for w in composition.weights.values())
    if total == 0:
        return blended
    per_lora = {name: composition.bank.manifest.lora(name).conditioning for name in composition.weights}
    for key in {k for values in per_lora.values() for k in values} | set(blended):
        fallback = backbone.default_conditioning.get(key, 0.0)
        blended[key] = sum(abs(w) * per_lora[n].get(key, fallback) for n, w in composition.weights.items()) / total
    return blended


def restore_both_rules(image: torch.Tensor, backbone: Backbone, bank, manual: Mapping[str, float] | None
                       ) -> dict[str, torch.Tensor]:
    shipped = Composition.conditioning
    outputs = {}
    for rule, method in (("variance", shipped), ("mean", weighted_mean)):
        Composition.conditioning = method
        try:
            outputs[rule] = pipeline.restore(image, backbone, bank, manual=manual, mode="manual" if manual else
                                             "override")[0]
        finally:
            Composition.conditioning = shipped
    return outputs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=9)
    parser.add_argument("--json", type=Path, help="write the per-image rows here")
    args = parser.parse_args()
    bank, backbone = pipeline.load_bank(), pipeline.default_backbone()
    validation = load_validation_images()[: args.photos]
    gains: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    rows = []
    for index, clean in enumerate(validation.split(1)):
        for number, (kinds, severity) in enumerate(CASES):
            generator = torch.Generator().manual_seed(SEED + 100 * index + number)
            damaged = degrade_alt(clean, list(kinds), generator=generator, severity=severity).clamp(0, 1)
            case, before = "+".join(kinds), psnr(damaged, clean)
            modes = {"auto": None} | ({"both@1": {kind: 1.0 for kind in kinds}} if len(kinds) > 1 else {})
            for mode, manual in modes.items():
                for rule, out in restore_both_rules(damaged, backbone, bank, manual).items():
                    gain = psnr(out, clean) - before
                    gains[case][f"{mode} {rule}"].append(gain)
                    rows.append({"photo": index, "case": case, "mode": mode, "rule": rule, "gain": gain})
        print(f"photo {index + 1}/{len(validation)}", flush=True)
    print("\n".join(mean_gain_lines(gains, overall=True)))
    if args.json:
        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
