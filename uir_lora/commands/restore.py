"""``uir-lora restore`` and ``uir-lora estimate``."""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from ..backbones.registry import FAMILIES, load_backbone
from ..cli import existing_path
from ..errors import InputError
from ..images import IMAGE_SUFFIXES, load_image, save_image
from ..pipeline import DEFAULT_BANK, estimate, estimate_spatial, load_bank, parse_weights, restore
from ..router.spatial import DEFAULT_WINDOW, region_map_picture
from ..sampler.restore import SamplerOptions


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("restore", help="restore a photo or a folder of photos")
    p.add_argument("input", type=existing_path, help="an image file or a folder of images")
    p.add_argument("-o", "--output", type=Path, help="output file (for one input) or folder")
    p.add_argument("--bank", default=DEFAULT_BANK, help="bank name in lora_bank/ or --bank-dir (default %(default)s)")
    p.add_argument("--bank-dir", action="append", default=[], help="extra folder holding banks (repeatable)")
    p.add_argument("--top-k", type=int, help="how many LoRAs the router keeps (default: the bank's)")
    p.add_argument("--temperature", type=float, help="softmax temperature over the kept similarities")
    p.add_argument("--weights", default="", help="manual weights, e.g. noise=0.7,jpeg=0.3 (skips the router)")
    p.add_argument("--mode", choices=("manual", "override", "bias"), default="manual",
                   help="how --weights combine with the router (default: manual = router off)")
    p.add_argument("--tile", type=int, default=512, help="tile size in pixels (memory bound)")
    p.add_argument("--strength", type=float, default=1.0, help="0 = input, 1 = full restoration")
    p.add_argument("--unfused", action="store_true", help="run LoRAs beside the weights instead of merging")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--spatial", action="store_true",
                   help="route per region: each part of the image gets its own LoRA weights")
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW, help="per-region window in px (default %(default)s)")
    p.add_argument("--backbone", choices=list(FAMILIES), default="embedded-ffdnet",
                   help="the backbone family the bank was made for (default %(default)s)")
    p.add_argument("--backbone-path", type=Path, help="its weights: spandrel, a model file (e.g. ComfyUI's "
                   "models/upscale_models/*.safetensors); sd-turbo, a checkpoint or diffusers folder")
    p.set_defaults(run=run_restore)

    e = subparsers.add_parser("estimate", help="print the router's weight table for images")
    e.add_argument("input", type=existing_path)
    e.add_argument("--bank", default=DEFAULT_BANK)
    e.add_argument("--bank-dir", action="append", default=[])
    e.add_argument("--top-k", type=int)
    e.add_argument("--temperature", type=float)
    e.add_argument("--map", type=Path, help="write a picture of the per-region weights here "
                   "(a .png file for one input; a folder for a folder of inputs)")
    e.add_argument("--window", type=int, default=DEFAULT_WINDOW, help="per-region window in px (default %(default)s)")
    e.set_defaults(run=run_estimate)


def list_inputs(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = [p for p in sorted(path.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise InputError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return files


def output_path(source: Path, args: argparse.Namespace, single: bool) -> Path:
    if args.output and single and args.output.suffix:
        target = args.output
        if target.suffix.lower() not in IMAGE_SUFFIXES:
            raise InputError(f"{target}: {target.suffix!r} is not an image format this pack writes; end the "
                             f"-o name with one of {', '.join(IMAGE_SUFFIXES)} (or give a folder)")
    else:
        folder = args.output or (source.parent if single else source.parent.parent / f"{source.parent.name}_restored")
        target = folder / f"{source.stem}_restored.png"
    if target.resolve() == source.resolve():
        raise InputError(f"{target}: output would overwrite the input; choose another -o")
    if target.exists() and not args.overwrite:
        raise InputError(f"{target} exists; pass --overwrite to replace it")
    return target


def run_restore(args: argparse.Namespace) -> int:
    inputs = list_inputs(args.input)
    single = args.input.is_file()
    targets = [output_path(p, args, single) for p in inputs]  # check every name before any work
    bank = load_bank(args.bank, args.bank_dir)
    backbone = load_backbone(args.backbone, args.backbone_path)
    manual = parse_weights(args.weights)
    options = SamplerOptions(tile=args.tile)
    for source, target in tqdm(list(zip(inputs, targets)), desc="restore", unit="img", disable=len(inputs) == 1):
        image = load_image(source)
        with tqdm(total=1, desc=source.name, unit="tile", leave=False) as bar:
            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.n = done
                bar.refresh()

            restored, compositions = restore(
                image, backbone, bank, manual=manual, mode=args.mode, top_k=args.top_k, temperature=args.temperature,
                fused=not args.unfused, strength=args.strength, options=options, progress=progress,
                spatial=args.spatial, window=args.window,
            )
        save_image(restored, target)
        weights = ", ".join(f"{k}={v:.2f}" for k, v in sorted(compositions[0].weights.items(), key=lambda kv: -kv[1]))
        print(f"{source} -> {target}  [{compositions[0].source}: {weights or 'base only'}]")
    return 0


def run_estimate(args: argparse.Namespace) -> int:
    bank = load_bank(args.bank, args.bank_dir)
    single = args.input.is_file()
    for source in list_inputs(args.input):
        image = load_image(source)
        (result,) = estimate(bank, image, args.top_k, args.temperature)
        print(f"== {source}")
        print(result.table())
        if args.map:
            target = args.map if single and args.map.suffix else args.map / f"{source.stem}_map.png"
            (regions,) = estimate_spatial(bank, image, args.window, args.top_k, args.temperature)
            save_image(region_map_picture(image, regions), target)
            weights = ", ".join(f"{k}={v:.2f}" for k, v in regions.mean_weights().items())
            print(f"per-region map ({regions.weights[0].numel()} windows; average {weights}) -> {target}")
    return 0
