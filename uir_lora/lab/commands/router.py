"""``uir-lora train-router --bank DIR`` and ``uir-lora bank add --bank DIR --name NAME --images ...``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...commands.arguments import existing_path
from ...errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..router.fit import RouterFitConfig  # light: the encoder is only built when the command runs
    from ..router.temperature import DEFAULT_PHOTOS

    p = subparsers.add_parser("train-router", help="fit the router (embeddings, standardisation, unknown "
                                                   "threshold) for every LoRA of a bank")
    p.add_argument("--bank", type=existing_path, required=True, help="bank folder (holds manifest.json)")
    defaults = RouterFitConfig()
    p.add_argument("--per-photo", type=int, default=defaults.per_photo,
                   help=f"crops per training photo and class (default {defaults.per_photo})")
    p.add_argument("--per-render", type=int, default=defaults.per_render,
                   help=f"crops per photo-like template render and class (default {defaults.per_render}; 0: none)")
    p.add_argument("--mixtures", type=int, default=defaults.mixtures,
                   help=f"examples of random pairs of kinds, target 1/2:1/2 (default {defaults.mixtures}; 0: none)")
    p.add_argument("--outliers", type=int, default=defaults.outliers,
                   help=f"outlier-exposure examples for the 'unknown' embedding (default {defaults.outliers}; 0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=defaults.steps, help="optimisation steps for the embeddings")
    p.add_argument("--false-alarm", type=float, default=defaults.false_alarm,
                   help="share of known-kind validation images the unknown tests may flag, split between them")
    p.add_argument("--top-k", type=int, default=defaults.top_k, help="default number of LoRAs the router keeps")
    p.add_argument("--unknown-strength", type=float, default=defaults.unknown_strength,
                   help="router weights are scaled by this when the degradation is unknown")
    p.add_argument("--cache-dir", type=Path, help="feature cache (default ~/.cache/uir_lora or $UIR_LORA_CACHE)")
    p.add_argument("--temperature-photos", type=int, default=DEFAULT_PHOTOS,
                   help="after the fit, choose top-K and the temperature by restoration PSNR on this many training "
                        "photos with the bank's own backbone, an embedded one (default %(default)s, as for the shipped "
                        "bank; 0: keep --top-k and the learned T, e.g. for a slow backbone on a CPU)")
    p.add_argument("--temperature-json", type=Path, help="write the temperature sweep's full table here")
    p.set_defaults(run=run_train_router)
    register_presence(subparsers)


def register_presence(subparsers: argparse._SubParsersAction) -> None:
    from ..router.presence import SHIPPED_SEEDS, PresenceData

    defaults = PresenceData()
    p = subparsers.add_parser("train-presence", help="fit presence heads on the frozen router encoder (many scenes, "
                                                     "three syntheses, mixtures, clean) and make them the bank's "
                                                     "router: calibrated weights that need not sum to one")
    p.add_argument("--bank", type=existing_path, required=True, help="bank folder (holds manifest.json)")
    p.add_argument("--examples", type=int, default=defaults.examples, help="examples per seed (default %(default)s)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(SHIPPED_SEEDS),
                   help="one example set per seed, about 11 CPU-minutes each to encode (cached); the default "
                        "is the shipped router's (%(default)s)")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="L2 on the heads' weights (default %(default)s)")
    p.add_argument("--top-k", type=int, default=2, help="LoRAs the router keeps (default %(default)s)")
    p.add_argument("--confidence-full", type=float, default=0.5,
                   help="damage presence from which the restore gets full strength (default %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.set_defaults(run=run_train_presence)


def run_train_presence(args: argparse.Namespace) -> int:
    import torch

    from ..router.presence import PresenceData, fit_bank_presence

    if args.examples < 20 or args.weight_decay < 0 or args.top_k < 1 or not 0 < args.confidence_full <= 1:
        raise InputError(f"need --examples >= 20, --weight-decay >= 0, --top-k >= 1 and --confidence-full in (0, 1], "
                         f"got {args.examples}, {args.weight_decay}, {args.top_k}, {args.confidence_full}")
    if args.threads:
        torch.set_num_threads(args.threads)
    with _lock(args.bank):
        report = fit_bank_presence(args.bank, PresenceData(examples=args.examples), args.seeds, args.weight_decay,
                                   args.top_k, args.confidence_full)
    held = report["held_out"]
    print(f"presence heads for {len(held['classes'])} classes from {report['examples']} examples; held out: top-1 "
          f"{held['top1_single']:.3f} on single kinds and clean, both kinds in the top 2 on {held['top2_mixtures']} "
          f"of mixtures")
    if report["unset"]:
        print(f"no head for {', '.join(report['unset'])}: give each its B with "
              f"`uir-lora bank add --bank {args.bank} --name NAME --images DIR`")
    return 0


def register_bank_add(actions: argparse._SubParsersAction) -> None:
    """``uir-lora bank add``: hooked into the ``bank`` command of commands/bank.py."""
    add = actions.add_parser("add", help="set one LoRA's router embedding from example degraded images; "
                                         "every other entry is left untouched")
    add.add_argument("--bank", type=existing_path, required=True, help="bank folder (holds manifest.json)")
    add.add_argument("--name", required=True, help="the LoRA's name in the bank (made by uir-lora train-lora)")
    add.add_argument("--images", type=existing_path, nargs="+", required=True,
                     help="a folder of images or image files that show this degradation")
    add.add_argument("--no-refine", action="store_true", help="plain centroid; skip moving away from the others")
    add.add_argument("--clean-images", type=existing_path, nargs="+", help="clean photos (a folder or files): the "
                     "bank's built-in kinds are drawn on them and kept with their own LoRAs while the embedding is "
                     "placed, so the new kind does not take their photos")
    add.add_argument("--negatives", type=int, help="--clean-images: examples of the built-in kinds drawn per "
                     "photo, the kinds in turn (default 4 when the bank keeps its router's examples, as the shipped "
                     "one does; else 26, each of the shipped bank's 13 classes twice)")
    add.add_argument("--no-reference-photos", action="store_true", help="leave out the bank's own training photos "
                     "and renders (the [train] extra), on which the built-in kinds are also drawn to place the "
                     "embedding and calibrate its route margin")
    add.set_defaults(run=run_bank_add)


def _lock(bank: Path):
    from .train import bank_lock  # the same lock train-lora takes around its manifest writes

    return bank_lock(bank)


def run_train_router(args: argparse.Namespace) -> int:
    from ..router.fit import RouterFitConfig, train_router

    if args.per_photo < 1 or args.steps < 1 or min(args.per_render, args.mixtures, args.outliers) < 0:
        raise InputError(f"need --per-photo >= 1, --steps >= 1 and --per-render/--mixtures/--outliers >= 0, got "
                         f"{args.per_photo}, {args.steps}, {args.per_render}, {args.mixtures}, {args.outliers}")
    config = RouterFitConfig(per_photo=args.per_photo, per_render=args.per_render, mixtures=args.mixtures,
                             outliers=args.outliers, seed=args.seed, steps=args.steps,
                             false_alarm=args.false_alarm, top_k=args.top_k, unknown_strength=args.unknown_strength)
    if args.temperature_photos < 0:
        raise InputError(f"--temperature-photos must be 0 or more, got {args.temperature_photos}")
    with _lock(args.bank):
        train_router(args.bank, config, cache_dir=args.cache_dir)
        if args.temperature_photos:
            choose_temperature(args.bank, args.temperature_photos, args.temperature_json)
    print(f"wrote {args.bank / 'manifest.json'} (router only; LoRA files untouched)")
    return 0


def choose_temperature(bank: Path, photos: int, json_path: Path | None) -> None:
    """The last step of train-router: top-K and T by restoration quality (lab/router/temperature.py)."""
    import json

    from ..router.temperature import record_choice, sweep, training_photos

    result = sweep(bank, training_photos(photos))
    if json_path:
        json_path.write_text(json.dumps(result, indent=1) + "\n")
    top_k, temperature = record_choice(bank, result, f"first {photos} training photos",
                                       f"uir-lora train-router --temperature-photos {photos}")
    print(f"router defaults by restoration PSNR: top_k {top_k}, temperature {temperature:g}")


def run_bank_add(args: argparse.Namespace) -> int:
    from ...commands.restore import list_inputs
    from ...images import load_image
    from ..router.fit import add_embedding, bank_add_negatives, reference_photos

    files = [f for path in args.images for f in list_inputs(path)]
    clean = [load_image(f) for path in args.clean_images or [] for f in list_inputs(path)]
    negatives = bank_add_negatives(args.bank, clean, args.negatives, 0,
                                   (lambda: []) if args.no_reference_photos else reference_photos)
    with _lock(args.bank):
        _, report = add_embedding(args.bank, args.name, [load_image(f) for f in files], refine=not args.no_refine,
                                  negatives=negatives)
    print(f"set the embedding of {args.name!r} from {report['examples']} images"
          f"{' (refined against the other embeddings)' if report['refined'] else ''}; "
          f"{report['routed_to_new']}/{report['examples']} of them now route to it first"
          f"{'' if 'subspace_rank' not in report else '; the unknown test now knows its examples too'}")
    if "route_margin" in report:
        print(f"route margin {report['route_margin']:.3f}: {report['negatives_taken']}/{report['negatives']} "
              f"examples of the other kinds route to {args.name!r} first")
    return 0
