"""Backbones side by side: Real-ESRGAN x4plus (alone, or with a bank), the FFDNet bank, classical methods.

    python tools/bench_backbones.py quality [--size 128] [--images 3] [--out runs/backbones/quality.json]
    python tools/bench_backbones.py speed [--side 512] [--backbone embedded-realesrgan]

- ``quality``: held-out photos (scikit-image astronaut, coffee, chelsea, ... centre crops), each degraded
  by noise, defocus blur, JPEG and low resolution with the evaluation harness's seeds; rows: input,
  classical, the FFDNet bank through the router, Real-ESRGAN alone in both ways a ×4 model restores
  at ×1 (spandrel_backbone.SCALE_MODES), and Real-ESRGAN with its bank through the router when
  --realesrgan-bank is given. PSNR, SSIM, HaarPSI, feature distance, seconds per image.
- ``speed``: seconds for one image of ``--side``² (tiled as the pipeline tiles), and the process's peak
  resident memory (ru_maxrss): run it once per backbone, in a fresh process each.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from uir_lora import pipeline  # noqa: E402
from uir_lora.backbones.realesrgan import load_realesrgan  # noqa: E402
from uir_lora.backbones.registry import load_backbone  # noqa: E402
from uir_lora.backbones.spandrel_backbone import SCALE_MODES  # noqa: E402
from uir_lora.lab.evaluate.datasets import default_images  # noqa: E402
from uir_lora.lab.evaluate.harness import Case, aggregate, bare_restore, evaluate  # noqa: E402
from uir_lora.sampler.restore import SamplerOptions  # noqa: E402

CASES = [Case((kind,)) for kind in ("noise", "defocus_blur", "jpeg", "low_resolution")]


def realesrgan_alone(scale_mode: str):  # noqa: ANN201 - a harness Method
    backbone = load_realesrgan(scale_mode=scale_mode)  # its own object: each mode keeps its own
    return lambda x: (bare_restore(backbone, x, {}), {})


def with_bank(bank_name: str, bank_dirs: list[str]):  # noqa: ANN201
    backbone = load_backbone("embedded-realesrgan")
    bank = pipeline.load_bank(bank_name, bank_dirs)

    def run(x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        out, comps = pipeline.restore(x, backbone, bank)
        return out, {"weights": {k: round(v, 4) for k, v in comps[0].weights.items()}}

    return run


def report(done: int, total: int) -> None:
    print(f"  {done}/{total}", flush=True)


def summarise(rows: list[dict], methods: list[str] | None = None) -> str:
    """A markdown table: case x method, mean PSNR / SSIM / HaarPSI / feature distance / seconds."""
    table = aggregate(rows)
    lines = ["| case | method | PSNR | SSIM | HaarPSI | feature distance | s/image |", "|---|---|---|---|---|---|---|"]
    for case, by_method in table.items():
        for method, m in by_method.items():
            if methods and method not in methods:
                continue
            seconds = sum(r["seconds"] for r in rows if r["case"] == case and r["method"] == method) / m["n"]
            lines.append(f"| {case} | {method} | {m['psnr']:.2f} | {m['ssim']:.3f} | {m['haarpsi']:.3f} | "
                         f"{m['feature_distance']:.3f} | {seconds:.1f} |")
    return "\n".join(lines)


def run_quality(args: argparse.Namespace) -> dict:
    images = default_images(args.size, args.images)
    extra = {f"realesrgan_{mode}": realesrgan_alone(mode) for mode in SCALE_MODES}
    if args.realesrgan_bank:
        extra["realesrgan_router"] = with_bank(args.realesrgan_bank, args.bank_dir)
    rows, _ = evaluate(images, pipeline.default_backbone(), pipeline.load_bank(), cases=CASES, extra_methods=extra,
                       only=None if args.all_classical else {"input", "router", *extra, *CLASSICAL_DEFAULTS},
                       progress=report)
    return {"rows": rows, "markdown": summarise(rows)}


CLASSICAL_DEFAULTS = ("nl_means", "richardson_lucy", "bilateral", "unsharp")
"""One classical method per kind here (the first of each kind in classical.py)."""


def run_speed(args: argparse.Namespace) -> dict:
    backbone = load_backbone(args.backbone)
    if args.scale_mode:
        backbone.scale_mode = args.scale_mode  # this process's own cached object
    width, _, height = args.side.partition("x")
    width, height = int(width), int(height or width)
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    options = SamplerOptions(tile=args.tile)
    bank = pipeline.load_bank(args.bank, args.bank_dir) if args.bank else None
    start, cpu_start = time.perf_counter(), time.process_time()
    if bank is None:
        bare_restore(backbone, image, dict(backbone.default_conditioning))
    else:
        pipeline.restore(image, backbone, bank, options=options)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    mode = getattr(backbone, "scale_mode", "")
    result = {"backbone": args.backbone, "scale_mode": mode, "bank": args.bank, "side": args.side,
              "wall_seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1),
              "peak_rss_mib": round(peak_mib), "threads": torch.get_num_threads()}
    # CPU time: other jobs share the machine, so wall time would measure them too
    result["markdown"] = (f"| {args.backbone} {mode} | {args.bank or 'none'} | {width}×{height} | "
                          f"{cpu_seconds:.1f} s | {seconds:.1f} s | {peak_mib:.0f} MiB |")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    quality = sub.add_parser("quality")
    quality.add_argument("--realesrgan-bank", help="a bank made for embedded-realesrgan (adds its router row)")
    quality.add_argument("--all-classical", action="store_true", help="every classical method, not one per kind")
    speed = sub.add_parser("speed")
    speed.add_argument("--backbone", default="embedded-ffdnet", choices=["embedded-ffdnet", "embedded-realesrgan"])
    speed.add_argument("--side", default="512", help="image side, or WIDTHxHEIGHT (e.g. 4000x3000)")
    speed.add_argument("--tile", type=int, default=512)
    speed.add_argument("--scale-mode", choices=SCALE_MODES, help="Real-ESRGAN: how the ×4 model restores at ×1")
    for p in (quality, speed):
        p.add_argument("--out", type=Path)
        p.add_argument("--bank", default=None if p is speed else pipeline.DEFAULT_BANK)
        p.add_argument("--bank-dir", action="append", default=[])
        p.add_argument("--threads", type=int, default=1)
    quality.add_argument("--size", type=int, default=128)
    quality.add_argument("--images", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {"quality": run_quality, "speed": run_speed}[args.command](args)
    result["command"] = "python tools/bench_backbones.py " + " ".join(sys.argv[1:])
    print(result["markdown"])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
