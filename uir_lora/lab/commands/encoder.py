"""``uir-lora encoder train --out FILE``, ``uir-lora encoder average A B --out FILE`` and
``uir-lora encoder install FILE --bank DIR``.

CPU: ``python -m uir_lora.lab encoder train ...``; GPUs: ``accelerate launch -m uir_lora.lab encoder train ...``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ...commands.arguments import existing_path
from ...errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    from ...degrade import KINDS
    from ...router.trained import CLEAN
    from ..router.train_encoder import EncoderTrainConfig

    encoder = subparsers.add_parser("encoder", help="train the degradation-aware router encoder, or put one "
                                                    "into a bank")
    actions = encoder.add_subparsers(dest="encoder_command", required=True)
    defaults = EncoderTrainConfig()
    train = actions.add_parser("train", help="fine-tune EfficientNet-Lite0 on presence and severity of each kind")
    train.add_argument("--out", type=Path, required=True, help="the encoder file to write (.safetensors)")
    train.add_argument("--steps", type=int, default=0, help="optimiser steps (0: run for --minutes)")
    train.add_argument("--minutes", type=float, default=defaults.minutes, help="wall-clock budget when --steps is 0")
    train.add_argument("--batch", type=int, default=defaults.batch)
    train.add_argument("--crop", type=int, default=defaults.crop, help="training crop side (native resolution)")
    train.add_argument("--lr", type=float, default=defaults.lr)
    train.add_argument("--workers", type=int, default=defaults.workers, help="data-loader processes")
    train.add_argument("--photos", type=existing_path, action="append", default=[],
                       help="a folder of extra clean photographs (repeatable)")
    train.add_argument("--bf16", action="store_true", help="bf16 autocast (CPU with AVX-512-BF16, or GPUs)")
    train.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    train.add_argument("--log-every", type=int, default=defaults.log_every)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--init", type=existing_path, help="an encoder file to continue training from "
                                                         "(default: the ImageNet base)")
    train.add_argument("--clean-share", type=float, default=defaults.clean_share,
                       help="share of the examples left undamaged")
    train.add_argument("--mixture-share", type=float, default=defaults.mixture_share,
                       help="share of the examples given 2-3 compatible kinds at once")
    train.add_argument("--wide-share", type=float, default=defaults.wide_share,
                       help="share of blur, low light and haze drawn from the wide synthesis profile's models")
    train.add_argument("--finish-share", type=float, default=defaults.finish_share,
                       help="share of the examples given a camera's faint noise and mild JPEG after their damage")
    train.add_argument("--precipitation-share", type=float, default=defaults.precipitation_share,
                       help="share of rain, snow and raindrops drawn from the third synthesis of them "
                            "(uir_lora.lab.precipitation)")
    train.add_argument("--camera-share", type=float, default=defaults.camera_share,
                       help="share of motion and defocus blur drawn from the third synthesis of them, through a "
                            "camera's pipeline (uir_lora.lab.camera_blur), and of clean examples through it in focus")
    train.add_argument("--short-shake-share", type=float, default=defaults.short_shake_share,
                       help="share of motion blur drawn as a short exposure's faint shake (2-5 px)")
    train.add_argument("--freeze-trunk", action="store_true",
                       help="train the neck and heads of --init only, its trunk as it is")
    train.add_argument("--anchor-weight", type=float, default=defaults.anchor_weight,
                       help="with --freeze-trunk: share of each presence target taken from --init's own presence")
    train.add_argument("--anchor-free", nargs="+", choices=[*KINDS, CLEAN], default=[], metavar="KIND",
                       help="with --anchor-weight: kinds (or clean) whose presence follows the labels alone")
    train.set_defaults(run=run_train)
    average = actions.add_parser("average", help="average two encoders of one lineage parameter by parameter")
    average.add_argument("first", type=existing_path)
    average.add_argument("second", type=existing_path)
    average.add_argument("--weight", type=float, default=0.5, help="the second encoder's share (0..1)")
    average.add_argument("--out", type=Path, required=True, help="the encoder file to write (.safetensors)")
    average.add_argument("--photos", type=existing_path, action="append", default=[],
                         help="extra clean photographs for the statistics of `bank add` (as in training)")
    average.set_defaults(run=run_average)
    install = actions.add_parser("install", help="copy an encoder into a bank and take each LoRA's B from its "
                                                 "presence head (LoRA files untouched)")
    install.add_argument("encoder_file", type=existing_path)
    install.add_argument("--bank", type=existing_path, required=True)
    install.add_argument("--confidence-full", type=float, default=0.5,
                         help="damage presence from which the restore gets full strength")
    install.set_defaults(run=run_install)


def run_train(args: argparse.Namespace) -> int:
    import torch

    from ..router.train_encoder import EncoderTrainConfig, train_encoder

    if args.steps < 0 or args.minutes <= 0 or args.batch < 2 or args.crop < 64 or args.workers < 0:
        raise InputError(f"need --steps >= 0, --minutes > 0, --batch >= 2, --crop >= 64 and --workers >= 0, got "
                         f"{args.steps}, {args.minutes}, {args.batch}, {args.crop}, {args.workers}")
    if not 0 <= args.clean_share < 1:
        raise InputError(f"--clean-share must be in [0, 1), got {args.clean_share}")
    if not 0 <= args.mixture_share <= 1 - args.clean_share:
        raise InputError(f"--mixture-share must be in [0, 1 - --clean-share], got {args.mixture_share} beside "
                         f"--clean-share {args.clean_share}")
    for flag, share in (("--wide-share", args.wide_share), ("--finish-share", args.finish_share),
                        ("--precipitation-share", args.precipitation_share), ("--camera-share", args.camera_share),
                        ("--short-shake-share", args.short_shake_share), ("--anchor-weight", args.anchor_weight)):
        if not 0 <= share <= 1:
            raise InputError(f"{flag} must be in [0, 1], got {share}")
    if args.out.suffix != ".safetensors":
        raise InputError(f"--out {args.out} must end in .safetensors")
    if args.threads:
        torch.set_num_threads(args.threads)
    config = EncoderTrainConfig(steps=args.steps, minutes=args.minutes, batch=args.batch, crop=args.crop,
                                lr=args.lr, workers=args.workers, bf16=args.bf16, seed=args.seed,
                                log_every=args.log_every, photo_dirs=[str(p) for p in args.photos],
                                init=str(args.init or ""), clean_share=args.clean_share,
                                mixture_share=args.mixture_share,
                                wide_share=args.wide_share, finish_share=args.finish_share,
                                precipitation_share=args.precipitation_share, camera_share=args.camera_share,
                                short_shake_share=args.short_shake_share, freeze_trunk=args.freeze_trunk,
                                anchor_weight=args.anchor_weight, anchor_free=args.anchor_free)
    train_encoder(config, args.out)
    return 0


def run_average(args: argparse.Namespace) -> int:
    from ..router.train_encoder import average_encoders

    if args.out.suffix != ".safetensors":
        raise InputError(f"--out {args.out} must end in .safetensors")
    if args.out.exists():
        raise InputError(f"{args.out} exists; name a new file (nothing is overwritten)")
    record = average_encoders(args.first, args.second, args.weight, args.out, args.photos)
    print(f"wrote {args.out} (sha256 {record['sha256'][:12]}): {1 - args.weight:g} x {args.first} + "
          f"{args.weight:g} x {args.second}")
    return 0


def run_install(args: argparse.Namespace) -> int:
    from ...router.trained import install_encoder
    from .train import bank_lock

    if not 0 < args.confidence_full <= 1:
        raise InputError(f"--confidence-full must be in (0, 1], got {args.confidence_full}")
    with bank_lock(args.bank):
        report = install_encoder(args.bank, args.encoder_file, args.confidence_full)
    print(f"installed {report['file']} (sha256 {report['sha256'][:12]}); B of {len(report['kinds'])} kinds and "
          f"clean from its presence head")
    if report["unset"]:
        print(f"no head for {', '.join(report['unset'])}: give each its B with "
              f"`uir-lora bank add --bank {args.bank} --name NAME --images DIR`")
    return 0
