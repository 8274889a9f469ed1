"""``uir-lora train-lora``: train one degradation's LoRA (or a full fine-tune) and add it to a bank.

CPU: ``python -m uir_lora.lab train-lora ...``; several GPUs: ``accelerate launch -m uir_lora.lab train-lora ...``.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from filelock import FileLock
from peft import LoraConfig

from ...backbones.registry import FAMILIES
from ...bank.manifest import MANIFEST_NAME, EncoderSpec, LoraEntry, placeholder_embedding, read_manifest
from ...bank.writer import add_lora, create_bank, save_lora_file
from ...errors import InputError
from ...extras import require

if TYPE_CHECKING:
    from ..train.pairs import PhotoPair

ALL = "all"  # --degradation all: a uniform mixture of every kind (the multi-task full-finetune baseline)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train-lora", help="train one degradation's LoRA and add it to a bank")
    p.add_argument("--degradation", help="a kind of uir_lora.degrade.KINDS, 'clean', or 'all' (or give --pairs, "
                   "or --degrade with --clean-photos, for a kind of your own)")
    p.add_argument("--bank", type=Path, help="bank folder to add the LoRA to (created if it has no manifest)")
    p.add_argument("--name", help="LoRA name (default: the degradation's name; required for a kind of your own)")
    own = p.add_argument_group("a kind of your own (see docs/your_own_kind.md)")
    own.add_argument("--pairs", type=Path, nargs=2, metavar=("DAMAGED_DIR", "CLEAN_DIR"),
                     help="train on photo pairs: each damaged photo and its clean version under the same name")
    own.add_argument("--degrade", metavar="MODULE:FUNCTION", help="train on --clean-photos damaged by this function "
                     "(module:function or path/to/file.py:function): f(image [1,3,H,W] in 0..1, generator) -> the "
                     "damaged image, same shape; imported from here only, never from a bank")
    own.add_argument("--clean-photos", type=Path, metavar="DIR", help="--degrade: the clean photos to damage")
    own.add_argument("--draws", type=int, default=4, help="--degrade: damaged versions per clean photo (default 4)")
    own.add_argument("--val-fraction", type=float, default=0.2, help="share of the pairs (or clean photos) held out "
                     "for validation, chosen by a hash of each name (default 0.2; 0: none)")
    own.add_argument("--no-bank-add", action="store_true", help="do not set the router embedding from the damaged "
                     "photos afterwards (run `uir-lora bank add` yourself)")
    own.add_argument("--negatives", type=int, help="bank add: examples of the bank's built-in kinds "
                     "drawn on each clean training photo, the kinds in turn, kept with their own LoRAs while the new "
                     "embedding is placed and its route margin calibrated, so the new kind does not take their photos "
                     "(default 4 when the bank keeps its router's examples, as the shipped one does; else 26, each "
                     "of the shipped bank's 13 classes twice, and 4 on each reference photo; 0: none)")
    own.add_argument("--no-reference-photos", action="store_true", help="bank add: leave out the bank's own "
                     "training photos and renders (the [train] extra), on which the other kinds and the new damage "
                     "are also drawn to place the embedding and calibrate its route margin")
    own.add_argument("--no-alignment-check", action="store_true", help="--pairs: skip the check that each pair is "
                     "not shifted (for damage that itself moves the picture, such as strong motion blur)")
    own.add_argument("--description", help="the kind's description in the manifest")
    p.add_argument("--steps", type=int, default=0, help="training steps (0: use --minutes)")
    p.add_argument("--minutes", "--time-budget", type=float, default=7.0, help="wall-clock budget (default 7)")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--crop", type=int, default=64, help="training crop side in pixels (<= 128)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--loss", choices=("l1", "mse"), default="l1", help="l1 (default) or mse: mse learns partial "
                   "corrections where the degradation is uncertain (raindrops), which PSNR rewards and l1 does not")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=False,
                   help="bf16 autocast (faster; float32 by default; see docs/training.md): an FFDNet LoRA trained "
                   "under bf16 learns bf16's errors and then hurts in float32")
    p.add_argument("--backbone", default="embedded-ffdnet", help=f"backbone family ({', '.join(FAMILIES)})")
    p.add_argument("--backbone-path", type=Path, help="sd-turbo: sd_turbo.safetensors or a diffusers folder; "
                   "spandrel: a model file (e.g. models/upscale_models/*.safetensors)")
    p.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations (large backbones)")
    p.add_argument("--data-dir", type=Path, help="cache folder for decoded crops (default <repo>/data)")
    p.add_argument("--full-finetune", action="store_true", help="train every backbone weight, no LoRA")
    p.add_argument("--output", type=Path, help="--full-finetune: where to write the backbone safetensors")
    p.add_argument("--replace", action="store_true", help="overwrite a LoRA of the same name in the bank")
    p.add_argument("--resume", action="store_true", help="continue training the bank's LoRA of this name (its "
                   "weights, rank and sigma) and replace it; provenance records every run and the total steps")
    p.add_argument("--frame-side", type=int, default=256, help="degrade crops as windows of a photo of this "
                   "side, so raindrop/haze/snow sizes match the 256 px validation photos (default 256; 0: each "
                   "crop is a whole photo, the behaviour before this option)")
    p.add_argument("--validation-photos", type=int, default=0, help="score the LoRA on the first N of the 9 "
                   "validation photos only (default 0: all); for a slow backbone on a CPU (embedded-realesrgan)")
    p.add_argument("--validation-side", type=int, default=0, help="score on a centre crop of this side of each "
                   "validation photo (default 0: the whole 256 px photo); for a slow backbone on a CPU")
    p.add_argument("--followed-by", metavar="KIND", help="a share of the examples (--followed-share) also take this "
                   "built-in kind after the trained one, as a photo takes JPEG after its sensor noise; the LoRA "
                   "learns its damage under the later one (the target stays clean)")
    p.add_argument("--followed-share", type=float, default=0.35, help="--followed-by: the share (default 0.35)")
    p.add_argument("--measured-sigma", action="store_true", help="FFDNet-style families: tell the backbone each "
                   "photo's own noise level instead of one fixed sigma, in training and in every restore (a noise "
                   "kind; docs/engine.md)")
    p.add_argument("--identity-fraction", type=float, default=0.0, help="fraction of each batch that are identity "
                   "examples (clean crops, or crops of another kind, half and half; target = input) so the LoRA "
                   "leaves other images alone (default 0; see docs/training.md)")
    p.set_defaults(run=run_train)


def own_kind(args: argparse.Namespace) -> bool:
    """True when the LoRA learns a user's kind of damage (--pairs or --degrade) instead of a built-in one."""
    return bool(args.pairs or args.degrade or args.clean_photos)


def _check_own_kind_args(args: argparse.Namespace) -> None:
    from ...bank.manifest import NAME_PATTERN

    if args.pairs and (args.degrade or args.clean_photos):
        raise InputError("give either --pairs DAMAGED_DIR CLEAN_DIR or --degrade FN --clean-photos DIR, not both")
    if bool(args.degrade) != bool(args.clean_photos):
        raise InputError("--degrade and --clean-photos go together: the function damages the clean photos")
    if args.degradation or args.full_finetune or args.resume or args.identity_fraction:
        raise InputError("--pairs/--degrade train a kind of your own: drop --degradation, --full-finetune, --resume "
                         "and --identity-fraction")
    if not args.name or not NAME_PATTERN.match(args.name):
        raise InputError(f"give the new kind a --name of lower-case letters, digits, '_' or '-' (e.g. --name "
                         f"scratches); got {args.name!r}")
    if args.bank is None:
        raise InputError("give --bank FOLDER (a copy of a bank to add the kind to, or a new folder)")
    if not 0 <= args.val_fraction < 1 or args.draws < 1 or (args.negatives or 0) < 0:
        raise InputError(f"need 0 <= --val-fraction < 1, --draws >= 1 and --negatives >= 0; got {args.val_fraction}, "
                         f"{args.draws}, {args.negatives}")


def _check_args(args: argparse.Namespace, kinds: tuple[str, ...]) -> None:
    if own_kind(args):
        _check_own_kind_args(args)
    elif args.degradation not in (*kinds, ALL):
        given = f"--degradation {args.degradation!r} is unknown"
        given = "no --degradation was given" if args.degradation is None else given
        raise InputError(f"{given}; choose one of {', '.join(kinds)} or {ALL}, "
                         f"or train a kind of your own with --pairs DAMAGED_DIR CLEAN_DIR --name NAME")
    if args.full_finetune and args.output is None:
        raise InputError("--full-finetune writes a backbone, not a LoRA: give --output FILE.safetensors")
    if not args.full_finetune and args.bank is None:
        raise InputError("give --bank FOLDER (a bank folder; it is created when it has no manifest.json)")
    if not args.full_finetune and args.degradation == ALL:
        raise InputError("--degradation all is for --full-finetune; a LoRA learns one kind")
    if args.resume and (args.full_finetune or args.bank is None or not (args.bank / MANIFEST_NAME).is_file()):
        raise InputError("--resume continues a LoRA of an existing bank: give --bank FOLDER with a manifest.json "
                         "(and no --full-finetune)")
    if args.frame_side and args.frame_side < args.crop and not own_kind(args):
        raise InputError(f"--frame-side {args.frame_side} is smaller than --crop {args.crop}; use >= the crop or 0")
    # kinds ends with "clean": identity examples need one real degradation to be "other" than
    if args.identity_fraction and (not 0 < args.identity_fraction < 1 or args.degradation not in kinds[:-1]):
        raise InputError(f"--identity-fraction {args.identity_fraction} needs 0 < F < 1 (0: off) and one "
                         f"degradation kind (not {args.degradation!r}); e.g. --identity-fraction 0.25")
    if args.followed_by and (args.followed_by not in kinds[:-1] or args.degradation not in kinds[:-1]
                             or args.followed_by == args.degradation or not 0 < args.followed_share <= 1):
        raise InputError(f"--followed-by {args.followed_by!r} needs another built-in kind than --degradation "
                         f"({args.degradation!r}) and 0 < --followed-share <= 1; e.g. --followed-by jpeg "
                         f"--followed-share 0.35")
    if args.validation_photos < 0 or args.validation_side < 0 or 0 < args.validation_side < 32:
        raise InputError(f"need --validation-photos >= 0 and --validation-side 0 or >= 32; got "
                         f"{args.validation_photos}, {args.validation_side}")
    if args.steps < 0 or args.minutes <= 0 or args.batch < 1 or args.rank < 1 or not 8 <= args.crop <= 128:
        raise InputError(f"need --steps >= 0, --minutes > 0, --batch >= 1, --rank >= 1, 8 <= --crop <= 128; got "
                         f"{args.steps}, {args.minutes}, {args.batch}, {args.rank}, {args.crop}")


def bank_lock(bank_dir: Path) -> FileLock:
    """Serialise manifest read-modify-writes of trainings that finish at the same time."""
    key = hashlib.sha1(str(bank_dir.resolve()).encode()).hexdigest()[:16]
    return FileLock(str(Path(tempfile.gettempdir()) / f"uir-lora-bank-{key}.lock"))


def _resume_from(args: argparse.Namespace, name: str) -> tuple[LoraEntry, dict[str, torch.Tensor]]:
    """The bank's entry and weights of LoRA ``name`` (--resume), with its rank overriding --rank."""
    from ...bank.store import read_lora_file

    manifest = read_manifest(args.bank)
    if name not in manifest.names:
        raise InputError(f"--resume: bank {args.bank} has no LoRA {name!r} (it has {', '.join(manifest.names)}); "
                         "train it first without --resume")
    entry = manifest.lora(name)
    if entry.rank != args.rank:
        print(f"--resume: using the stored LoRA's rank {entry.rank} (not --rank {args.rank})")
        args.rank = entry.rank
    return entry, read_lora_file(args.bank / entry.file)


def resumed_provenance(previous: dict, run: dict) -> dict:
    """This run's record, with ``steps``/``wall_seconds`` totalled over all runs and ``runs`` listing each."""
    runs = [*previous.get("runs", [previous]), {**run, "resumed": True}]
    return {**run, "steps": sum(r["steps"] for r in runs), "run_steps": run["steps"],
            "wall_seconds": round(sum(r.get("wall_seconds", 0.0) for r in runs), 1),
            "runs": [{k: v for k, v in r.items() if k != "runs"} for r in runs]}


@dataclass
class OwnKindData:
    """A user's kind: training and held-out pairs, and how they were made (for the provenance)."""

    train: list[PhotoPair]
    held_out: list[PhotoPair]
    record: dict


def _own_kind_data(args: argparse.Namespace, say: Callable[[str], None]) -> OwnKindData:
    """Pairs from --pairs, or --clean-photos damaged by --degrade; split by a hash of each name."""
    from ..train import pairs as own

    if args.pairs:
        found = own.find_pairs(*args.pairs, alignment=not args.no_alignment_check)
        val_names = own.held_out([pair.name for pair in found], args.val_fraction)
        train = [pair for pair in found if pair.name not in val_names]
        val = [pair for pair in found if pair.name in val_names]
        record = {"source": "pairs", "damaged_dir": str(args.pairs[0]), "clean_dir": str(args.pairs[1]),
                  "pairs": len(found)}
    else:
        function = own.load_damage_function(args.degrade)  # only ever from the command line
        photos = own.load_photos(args.clean_photos)
        val_names = own.held_out([stem for stem, _ in photos], args.val_fraction)
        train = own.damaged_pairs([p for p in photos if p[0] not in val_names], function, args.degrade,
                                  args.draws, args.seed)
        val = own.damaged_pairs([p for p in photos if p[0] in val_names], function, args.degrade, 1, args.seed + 1)
        record = {"source": "clean photos damaged by a function", "degrade": args.degrade,
                  "degrade_file_sha256": own.file_digest(args.degrade), "clean_dir": str(args.clean_photos),
                  "photos": len(photos), "draws": args.draws}
    record.update(train_pairs=[pair.name for pair in train], held_out_pairs=sorted(val_names),
                  split=f"{args.val_fraction:g} of the names held out, the first in the order of sha256(name)")
    say(f"{args.name}: {len(train)} training pairs, {len(val)} held out ({', '.join(sorted(val_names)) or 'none'})")
    return OwnKindData(train, val, record)


def _check_new_name(bank_dir: Path, name: str, replace: bool) -> None:
    """Refuse a taken name before training rather than after it."""
    if (bank_dir / MANIFEST_NAME).is_file() and not replace and name in read_manifest(bank_dir).names:
        raise InputError(f"bank {bank_dir} already has a LoRA {name!r}; choose another --name or pass --replace")


def _route_held_out(bank_dir: Path, name: str, images: list[torch.Tensor]) -> str:
    """How many held-out damaged photos the bank's router now sends to ``name`` first."""
    from ...router.router import Router

    router = Router.of_folder(bank_dir)
    best = [router.scores(image).similarities.argmax(dim=-1).item() for image in images]
    hits = sum(router.names[index] == name for index in best)
    return f"{hits}/{len(images)} held-out damaged photos route to {name!r} first"


def run_train(args: argparse.Namespace) -> int:
    Accelerator = require("accelerate", "train", "uir-lora train-lora").Accelerator

    from ...degrade import DEGRADATION_INFO
    from ..train import data, trainer, validate
    from ..train.pairs import PairCropDataset

    kinds = trainer.all_kinds()
    _check_args(args, kinds)
    own = None
    if own_kind(args):
        _check_new_name(args.bank, args.name, args.replace)
    torch.set_num_threads(args.threads)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    log = logging.getLogger("uir_lora.lab.train")
    say = print if accelerator.is_main_process else (lambda *_: None)
    torch.manual_seed(args.seed)
    if args.backbone not in FAMILIES:
        raise InputError(f"--backbone {args.backbone!r} is unknown; choose one of {', '.join(FAMILIES)}")
    if own_kind(args):
        own = _own_kind_data(args, say)  # before the backbone: bad pairs fail fast
    backbone = FAMILIES[args.backbone](args.backbone_path)  # a fresh copy, never the shared cached one
    if args.gradient_checkpointing:
        if not hasattr(backbone, "enable_gradient_checkpointing"):
            raise InputError(f"--gradient-checkpointing: the {args.backbone} family has none (it is small); drop it")
        backbone.enable_gradient_checkpointing()
    name = args.name or args.degradation
    frame_side = args.frame_side or None
    length = (args.steps or 10**7) * args.batch * accelerator.num_processes
    if own is None:
        data_dir = args.data_dir or data.DEFAULT_DATA_DIR
        with accelerator.main_process_first():  # the first run builds the cache once
            crops, data_info = data.load_training_crops(data_dir)
            val_images = data.validation_subset(data.load_validation_images(data_dir), args.validation_photos,
                                                args.validation_side)
        kind = list(trainer.KINDS) if args.degradation == ALL else args.degradation
        probe = trainer.PairDataset(crops, kind, crops.shape[-1], 32, args.seed + 7777, frame_side)  # to pick sigma
        dataset = trainer.PairDataset(crops, kind, args.crop, length, args.seed, frame_side, args.identity_fraction,
                                      args.followed_by, args.followed_share)
    else:
        kind, data_info = name, own.record
        probe = PairCropDataset(own.train, args.crop, 32, args.seed + 7777)
        dataset = PairCropDataset(own.train, args.crop, length, args.seed)
    resumed, init_state = _resume_from(args, name) if args.resume else (None, None)
    degraded, clean = (torch.stack(t) for t in zip(*(probe[i] for i in range(len(probe)))))
    conditioning, sigma_scores = dict(backbone.default_conditioning), {}
    measured = ["sigma"] if args.measured_sigma else []
    if args.measured_sigma and "sigma" not in conditioning:
        raise InputError(f"--measured-sigma: the {args.backbone} family takes no noise level; drop it")
    if resumed is not None:  # the LoRA was trained for its stored sigma: keep it
        conditioning = dict(resumed.conditioning)
        sigma_scores = resumed.provenance.get("sigma_scores", {})
        if measured != resumed.measured:
            raise InputError(f"--resume: {name!r} was trained with measured {resumed.measured or 'none'}; "
                             f"{'drop' if args.measured_sigma else 'pass'} --measured-sigma to continue it")
    elif measured:  # each photo's own noise level, this the most it is told
        conditioning = {"sigma": trainer.MEASURED_SIGMA_CEILING}
        say(f"{name}: sigma measured on each photo, at most {trainer.MEASURED_SIGMA_CEILING * 255:.0f}/255")
    elif "sigma" in conditioning:  # FFDNet-style families: pick the fixed noise level first
        sigma, sigma_scores = trainer.pick_sigma(backbone, degraded, clean)
        conditioning = {"sigma": sigma}
        say(f"{name}: fixed sigma {sigma * 255:.0f}/255 (base PSNR by sigma: "
            f"{ {k: round(v, 2) for k, v in sigma_scores.items()} })")
    cfg = trainer.TrainConfig(steps=args.steps, minutes=args.minutes, batch=args.batch, crop=args.crop, lr=args.lr,
                              seed=args.seed, bf16=args.bf16, loss=args.loss)
    alpha, targets = (resumed.alpha, list(resumed.target_modules)) if resumed else (
        float(args.rank), list(backbone.default_lora_targets))
    if args.full_finetune:
        before = validate.validate(backbone, kind, val_images, conditioning, None, measured=measured)
        stats = trainer.train_full(backbone, dataset, conditioning, cfg, accelerator=accelerator, log=say,
                                   measured=measured)
    else:
        config = LoraConfig(r=args.rank, lora_alpha=alpha, target_modules=targets)
        stats = trainer.train_lora(backbone, name, config, dataset, conditioning, cfg, init_state,
                                   accelerator=accelerator, log=say, measured=measured)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return 0
    if own is None:
        result = validate.validate(backbone, kind, val_images, conditioning, None if args.full_finetune else name,
                                   measured=measured)
    else:  # no held-out pairs (--val-fraction 0): nothing to score
        result = validate.validate_pairs(backbone, [(p.damaged, p.clean) for p in own.held_out], conditioning,
                                         name, measured) if own.held_out else {}
    if args.full_finetune:
        result = {**before, "psnr_out": result["base_psnr"], "ssim_out": result["base_ssim"]}
    losses = stats.pop("losses")
    provenance = {
        "data": data_info, "degradation": args.degradation or name,
        "steps": stats["steps"], "batch": args.batch, "crop": args.crop, "lr_schedule": cfg.schedule(),
        "loss": cfg.loss.upper(), "loss_first_50": round(sum(losses[:50]) / max(1, len(losses[:50])), 5),
        "loss_last_50": round(sum(losses[-50:]) / max(1, len(losses[-50:])), 5), "seed": args.seed,
        "wall_seconds": stats["seconds"], "threads": args.threads, "processes": accelerator.num_processes,
        "bf16": cfg.bf16, "device": accelerator.device.type,
        "machine": "2-core CPU" if accelerator.device.type == "cpu" else torch.cuda.get_device_name(),
        "platform": platform.platform(terse=True), "torch": torch.__version__,
        "sigma_scores": {str(k): round(v, 3) for k, v in sigma_scores.items()},
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "uir-lora " + " ".join(sys.argv[1:]),
        "code": os.environ.get("UIR_LORA_CODE", "working tree"),  # tools/train_bank.sh: the git commit trained
    }
    if own is None:
        photos = data.VALIDATION_PHOTOS[:args.validation_photos or None]
        provenance.update(validation_photos=list(photos), validation_side=int(val_images.shape[-1]),
                          frame_side=frame_side,
                          identity_fraction=args.identity_fraction,
                          **({"followed_by": args.followed_by, "followed_share": args.followed_share}
                             if args.followed_by else {}))
    else:  # the held-out pairs' scores, next to the split they come from
        provenance["held_out_validation"] = result
    if resumed is not None:
        provenance = resumed_provenance(resumed.provenance, provenance)
    say(f"{name}: {stats['steps']} steps in {stats['seconds']:.0f}s; validation {result}")
    if args.full_finetune:
        save_lora_file(backbone.base_state_dict(), args.output, {"kind": "full-finetune", "provenance": provenance,
                                                                  "validation": result})
        say(f"wrote {args.output}")
        return 0
    bank_dir: Path = args.bank
    entry = LoraEntry(name=name, file=f"{name}.safetensors", rank=args.rank, alpha=alpha, target_modules=targets,
                      embedding=[],  # set under the lock below; a placeholder that `uir-lora train-router` fills
                      description=args.description or _description(name, own, DEGRADATION_INFO),
                      conditioning=conditioning, provenance=provenance, validation=result, measured=measured)
    with bank_lock(bank_dir):
        if not (bank_dir / MANIFEST_NAME).is_file():
            from ...router.encoder import DegradationEncoder

            dim = DegradationEncoder().dim
            create_bank(bank_dir, bank_dir.name, backbone.family, backbone.fingerprint,
                        EncoderSpec(dim=dim, feature_mean=[0.0] * dim, feature_std=[1.0] * dim),
                        description=f"LoRAs trained on the {backbone.family} backbone by uir-lora train-lora")
        # read inside the lock: a run finishing at the same moment may just have created the bank
        manifest = read_manifest(bank_dir)
        entry.embedding = placeholder_embedding(manifest.encoder, manifest.router)
        if name in manifest.names:  # re-training: the routing and the order describe the kind, not the weights
            old = manifest.lora(name)  # (its global stage is not kept: this trainer does not train through it)
            entry.embedding, entry.route_margin, entry.restored_before = (old.embedding, old.route_margin,
                                                                          old.restored_before)
            entry.embedding_of = old.embedding_of
        add_lora(bank_dir, entry, backbone.adapter_state(name), replace=args.replace or args.resume)
    log.info("added %s to %s", name, bank_dir)
    say(f"wrote {bank_dir / entry.file} and its manifest entry")
    if own is not None and not args.no_bank_add:
        _bank_add(bank_dir, name, own, args.negatives, args.seed, say, not args.no_reference_photos)
    return 0


def _description(name: str, own: OwnKindData | None, info: dict[str, str]) -> str:
    if own is not None:
        source = own.record.get("degrade") or own.record.get("damaged_dir")
        return f"{name}: a kind of damage learned from {own.record['source']} ({source})"
    return info.get(name, "Clean input: identity target, a safe route for undegraded photos")


def _bank_add(bank_dir: Path, name: str, own: OwnKindData, negatives_per_photo: int | None, seed: int,
              say: Callable[[str], None], reference: bool = True) -> None:
    """`uir-lora bank add` on the training pairs' damaged photos and their damage carried onto the bank's
    reference photos, against examples of the other kinds (``fit.bank_add_negatives``): only this kind's
    embedding and route margin (and the unknown test's subspace) change; then how the router sends the held-out
    damaged photos."""
    from ..router.fit import add_embedding, bank_add_negatives, reference_photos
    from ..train.pairs import carried_damage

    clean = list({id(pair.clean): pair.clean for pair in own.train}.values())  # --degrade: draws share a photo
    references = reference_photos() if reference else []
    negatives = bank_add_negatives(bank_dir, clean, negatives_per_photo, seed, lambda: references)
    examples = [pair.damaged for pair in own.train] + carried_damage(own.train, clean + references, seed=seed)
    kept = " and those its router keeps" if read_manifest(bank_dir).router.examples else ""
    say(f"bank add: the router embedding of {name!r} from {len(own.train)} damaged photos and "
        f"{len(examples) - len(own.train)} with their damage carried onto other pictures, kept apart from "
        f"{len(negatives)} examples of the bank's other kinds drawn here{kept}"
        + ("" if references or not reference else " (no reference photos: the [train] extra is not installed)"))
    with bank_lock(bank_dir):
        _, report = add_embedding(bank_dir, name, examples, negatives=negatives)
    against = (f", {report['negatives_taken']}/{report['negatives']} examples of other kinds do; route margin "
               f"{report['route_margin']:.3f}") if "route_margin" in report else " (closed form, no route margin)"
    say(f"bank add: {report['routed_to_new']}/{report['examples']} examples route to {name!r} first{against}"
        + (f"; {_route_held_out(bank_dir, name, [p.damaged for p in own.held_out])}" if own.held_out else ""))
