"""Is deblurring bounded by FFDNet's receptive field? Gain per blur severity, and where an output pixel looks.

    python tools/blur_receptive_field.py [BANK_DIR]      (after tools/train_bank.sh; 1 thread)

Prints, for motion and defocus blur at fixed severities (0 = mildest, 1 = strongest of the training range), the
validation PSNR of the input, FFDNet alone and the LoRA; then the radius around an output pixel that holds
50/90/99 % of its input-gradient mass (the effective receptive field) with the motion-blur LoRA active.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from uir_lora.backbones.registry import FAMILIES
from uir_lora.bank.store import open_bank
from uir_lora.lab.train.data import load_validation_images
from uir_lora.lab.train.validate import set_adapter_enabled, validate

SEVERITIES = (0.0, 0.5, 1.0)


def gain_by_severity(bank, backbone, adapters, images) -> None:
    print("| kind | severity | PSNR in | FFDNet alone | LoRA | gain over input |\n|---|---|---|---|---|---|")
    for kind in ("motion_blur", "defocus_blur"):
        entry = bank.manifest.lora(kind)
        for severity in SEVERITIES:
            r = validate(backbone, kind, images, entry.conditioning, adapters[kind], severity)
            print(f"| {kind} | {severity} | {r['psnr_in']:.2f} | {r['base_psnr']:.2f} | {r['psnr_out']:.2f} | "
                  f"{r['psnr_out'] - r['psnr_in']:+.2f} |")


def effective_receptive_field(backbone, adapter: str, image: torch.Tensor, conditioning) -> dict[float, int]:
    """Radius (px, Chebyshev) around the centre output pixel holding a share of |d out / d in|."""
    set_adapter_enabled(backbone, adapter)
    x = image.clone().requires_grad_(True)
    out = backbone.restore_step(x, conditioning)
    c = image.shape[-1] // 2
    out[0, :, c, c].sum().backward()
    mass = x.grad.abs().sum((0, 1))
    ys, xs = torch.meshgrid(torch.arange(mass.shape[0]), torch.arange(mass.shape[1]), indexing="ij")
    radius = torch.maximum((ys - c).abs(), (xs - c).abs())
    total = float(mass.sum())
    return {share: int(next(r for r in range(c) if float(mass[radius <= r].sum()) >= share * total))
            for share in (0.5, 0.9, 0.99)} | {1.0: int(radius[mass > 0].max())}


def main() -> None:
    torch.set_num_threads(1)
    bank = open_bank(Path(sys.argv[1] if len(sys.argv) > 1 else "lora_bank/embedded-ffdnet"))
    backbone = FAMILIES["embedded-ffdnet"](None)
    adapters = bank.attach(backbone)
    images = load_validation_images()
    gain_by_severity(bank, backbone, adapters, images)
    for name in ("motion_blur", None):
        cond = bank.manifest.lora("motion_blur").conditioning
        erf = effective_receptive_field(backbone, adapters[name] if name else None, images[:1], cond)
        print(f"{name or 'FFDNet alone'}: radius holding 50/90/99/100 % of the gradient mass: "
              f"{erf[0.5]}/{erf[0.9]}/{erf[0.99]}/{erf[1.0]} px (motion-blur kernels are 5-25 px long)")


if __name__ == "__main__":
    main()
