"""``--backbone``, ``--device``, ``--dtype`` and ``--tile-batch``: which backbone runs where, for ``restore``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from ..pipeline import DEVICE_FORMS, DTYPES, Backbone, load_backbone, parse_backbone_spec, resolve_device, resolve_dtype
from .distributed import ProcessShare

GPU_TILE_BATCH = 4
"""Tiles per backbone call on a GPU unless --tile-batch says otherwise; the CPU keeps 1 (one tile already
spreads over its cores)."""


def add_placement_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backbone", default="embedded",
                        help="'embedded' (the shipped FFDNet), 'embedded-realesrgan', an SD-Turbo-family diffusers "
                             "folder or .safetensors checkpoint, or FAMILY=PATH (e.g. spandrel=models/upscale_models/"
                             "x.safetensors); default %(default)s")
    parser.add_argument("--backbone-path", type=Path,
                        help="the weights of the --backbone family, as FAMILY=PATH gives them")
    parser.add_argument("--device", default="auto",
                        help=f"{DEVICE_FORMS} (default %(default)s: a GPU when there is one; under accelerate "
                             "launch, each process's own GPU)")
    parser.add_argument("--dtype", default="float32", choices=list(DTYPES),
                        help="backbone precision (default %(default)s; float16 needs a GPU)")
    parser.add_argument("--tile-batch", type=int, default=None,
                        help=f"tiles run together (default: {GPU_TILE_BATCH} on a GPU, 1 on the CPU); "
                             "halves itself on out-of-memory")


def backbone_from_args(args: argparse.Namespace, share: ProcessShare) -> Backbone:
    """Check the names first (a typo fails fast), then load the backbone where the options ask."""
    family, path = parse_backbone_spec(args.backbone)
    if args.backbone_path is not None:
        if path is not None:
            raise InputError(f"--backbone {args.backbone} already names its weights; drop --backbone-path")
        family, path = parse_backbone_spec(f"{family}={args.backbone_path}")
    launcher_gpu = share.device is not None and args.device.strip().lower() in ("auto", "cuda")
    device = share.device if launcher_gpu else resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    return load_backbone(family, path, device, dtype)


def tile_batch(args: argparse.Namespace, backbone: Backbone) -> int:
    if args.tile_batch is not None:
        return args.tile_batch
    return 1 if backbone.device.type == "cpu" else GPU_TILE_BATCH
