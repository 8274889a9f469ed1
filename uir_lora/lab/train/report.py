"""Markdown table of a bank's training record: ``python -m uir_lora.lab.train.report lora_bank/embedded-ffdnet``."""

from __future__ import annotations

import sys
from pathlib import Path

from ...bank.manifest import Manifest, read_manifest


def _num(value: float | None, digits: int) -> str:
    return "inf" if value is None else f"{value:.{digits}f}"


def validation_table(manifest: Manifest) -> str:
    """One row per LoRA: sigma, steps, minutes, crop, validation PSNR/SSIM in -> out and backbone alone."""
    rows = ["| LoRA | sigma (/255) | steps | minutes | crop | PSNR in | FFDNet alone | PSNR out | gain | "
            "SSIM in | SSIM out |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for entry in manifest.loras:
        val, prov = entry.validation, entry.provenance
        gain = (val["psnr_out"] - val["psnr_in"]) if val.get("psnr_in") is not None else None
        rows.append(
            f"| {entry.name} | {entry.conditioning.get('sigma', 0) * 255:.0f} | {prov.get('steps', '-')} | "
            f"{prov.get('wall_seconds', 0) / 60:.1f} | {prov.get('crop', '-')} | {_num(val.get('psnr_in'), 2)} | "
            f"{_num(val.get('base_psnr'), 2)} | {_num(val.get('psnr_out'), 2)} | "
            f"{'-' if gain is None else f'{gain:+.2f}'} | {_num(val.get('ssim_in'), 3)} | "
            f"{_num(val.get('ssim_out'), 3)} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(validation_table(read_manifest(Path(sys.argv[1] if len(sys.argv) > 1 else "lora_bank/embedded-ffdnet"))))
