"""``uir-lora restore`` and ``uir-lora estimate``.

Output names: ``<stem>_restored.png`` (``<stem>_map.png`` for maps) beside a single input, or in
``<folder>_restored/`` next to an input folder. Inputs of one folder that share a stem (``a.png``,
``a.jpg``) get their suffix in the name (``a_png_restored.png``, ``a_jpg_restored.png``). No output
may be one of the inputs; all names are checked before any work, and each file is written to a
temporary name and renamed, so nothing half-written is left. A file that cannot be read is reported
and skipped; the command then ends with exit status 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from ..errors import InputError
from ..pipeline import (
    DEFAULT_BANK,
    DEFAULT_WINDOW,
    IMAGE_SUFFIXES,
    MAX_NAME_BYTES,
    PIXEL_BUDGET_ENV,
    LoadedImage,
    SamplerOptions,
    check_routing_options,
    estimate,
    estimate_spatial,
    load_bank,
    parse_weights,
    pixel_budget,
    plan_restore,
    read_image,
    region_map_picture,
    restore_notes,
    save_image,
)
from .archive import add_archive_arguments, pending_jobs
from .arguments import decimal_number, existing_path, whole_number
from .distributed import ProcessShare
from .placement import add_placement_arguments, backbone_from_args, tile_batch


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("restore", help="restore a photo or a folder of photos")
    p.add_argument("input", type=existing_path, help="an image file or a folder of images")
    p.add_argument("-o", "--output", type=Path, help="output file (for one input) or folder")
    p.add_argument("--bank", default=DEFAULT_BANK, help="bank name in lora_bank/ or --bank-dir (default %(default)s)")
    p.add_argument("--bank-dir", action="append", default=[], help="extra folder holding banks (repeatable)")
    p.add_argument("--top-k", type=whole_number, help="how many LoRAs the router keeps (default: the bank's)")
    p.add_argument("--temperature", type=decimal_number, help="softmax temperature over the kept similarities")
    p.add_argument("--weights", default="", help="manual weights, e.g. noise=0.7,jpeg=0.3 (skips the router)")
    p.add_argument("--mode", choices=("manual", "override", "bias"), default="manual",
                   help="how --weights combine with the router (default: manual = router off)")
    p.add_argument("--tile", type=whole_number, default=512, help="tile size in pixels (memory bound)")
    p.add_argument("--strength", type=decimal_number, default=1.0, help="0 = input, 1 = full restoration")
    p.add_argument("--unfused", action="store_true", help="run LoRAs beside the weights instead of merging")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (never an input)")
    p.add_argument("--spatial", action="store_true",
                   help="route per region: each part of the image gets its own LoRA weights")
    p.add_argument("--window", type=whole_number, default=DEFAULT_WINDOW,
                   help="per-region window in px (default %(default)s)")
    _add_max_pixels(p)
    add_placement_arguments(p)
    add_archive_arguments(p)
    p.set_defaults(run=run_restore)

    e = subparsers.add_parser("estimate", help="print the router's weight table for images")
    e.add_argument("input", type=existing_path)
    e.add_argument("--bank", default=DEFAULT_BANK)
    e.add_argument("--bank-dir", action="append", default=[])
    e.add_argument("--top-k", type=whole_number)
    e.add_argument("--temperature", type=decimal_number)
    e.add_argument("--map", type=Path, help="write a picture of the per-region weights here "
                   "(a .png file for one input; a folder for a folder of inputs)")
    e.add_argument("--overwrite", action="store_true", help="replace existing map files (never an input)")
    e.add_argument("--window", type=whole_number, default=DEFAULT_WINDOW,
                   help="per-region window in px (default %(default)s)")
    _add_max_pixels(e)
    e.set_defaults(run=run_estimate)


def _add_max_pixels(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-pixels", type=whole_number,
                        help=f"refuse images with more pixels than this (default: ${PIXEL_BUDGET_ENV} or 120 M)")


def list_inputs(path: Path) -> list[Path]:
    """The file itself, or a folder's entries with an image suffix (special files included: refused when read)."""
    if not path.is_dir():
        return [path]
    files = [p for p in sorted(path.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise InputError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return files


def default_folder(folder: Path) -> Path:
    """``<folder>_restored`` beside an input folder (``restore .`` included: the folder's real name)."""
    real = folder.resolve()
    return real.parent / f"{real.name or 'images'}_restored"


def _fit_name(stem: str, tail: str) -> str:
    """``stem + tail``, the stem shortened (whole characters) so the name fits the file system's limit."""
    room = MAX_NAME_BYTES - len(tail.encode())
    return stem.encode("utf-8", "surrogateescape")[:room].decode("utf-8", "ignore") + tail


def plan_outputs(inputs: list[Path], output: Path | None, folder: Path | None, tag: str, overwrite: bool,
                 option: str) -> list[Path]:
    """One output path per input, all checked before any work (see the module docstring for the names).

    ``output``: the user's file (one input) or folder; ``folder``: where outputs go when it is not given;
    ``tag``: "restored" or "map"; ``option``: the command-line option named in messages.
    """
    if output is not None and output.name.endswith(".") and output.name not in (".", ".."):
        raise InputError(f"{option} {output}: a name ending in '.' is neither an image file nor a sensible folder; "
                         f"give a file name such as {output.name}png or a folder name without the dot")
    if output is not None and len(inputs) == 1 and output.suffix:
        if output.suffix.lower() not in IMAGE_SUFFIXES:
            raise InputError(f"{output}: {output.suffix!r} is not an image format this pack writes; end the "
                             f"{option} name with one of {', '.join(IMAGE_SUFFIXES)} (or give a folder)")
        targets = [output]
    else:
        where = output or folder
        stems = Counter(p.stem.casefold() for p in inputs)
        targets = [where / _fit_name(p.stem + (f"_{p.suffix[1:]}" if stems[p.stem.casefold()] > 1 else ""),
                                     f"_{tag}.png") for p in inputs]
    _check_targets(inputs, targets, overwrite, option)
    return targets


def _check_targets(inputs: list[Path], targets: list[Path], overwrite: bool, option: str) -> None:
    """No output is an input, two outputs never share a name, existing ones need --overwrite, folders can be made."""
    seen: dict[str, Path] = {}
    for source, target in zip(inputs, targets):
        key = os.path.normcase(str(target.resolve())).casefold()  # also one file on case-insensitive disks
        if key in seen:
            raise InputError(f"{seen[key]} and {source} would both be written to {target}; rename one of them")
        seen[key] = source
    identities = {_identity(p): p for p in inputs if _identity(p)}
    for target in targets:
        if _identity(target) in identities:
            raise InputError(f"{target}: the output would overwrite the input {identities[_identity(target)]}; "
                             f"choose another {option}")
        if target.is_dir():
            raise InputError(f"{target}: is a folder; choose another {option}")
        if target.exists() and not overwrite:
            raise InputError(f"{target} exists; pass --overwrite to replace it")
        _check_parent(target, option)


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of an existing file, the test ``os.path.samefile`` uses; None if there is none."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _check_parent(target: Path, option: str) -> None:
    """The nearest existing ancestor of ``target`` must be a folder, or the output folder cannot be made."""
    for ancestor in target.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise InputError(f"{target}: {ancestor} is a file, so no folder can be made there; "
                                 f"choose another {option}")
            return


def _read(source: Path, max_pixels: int | None, failures: list[str]) -> LoadedImage | None:
    """The image, or None after reporting why it cannot be read (the other inputs still run)."""
    try:
        loaded = read_image(source, max_pixels=max_pixels)
    except InputError as exc:
        failures.append(str(source))
        print(f"uir-lora: skipped: {exc}", file=sys.stderr)  # the message names the file
        return None
    if loaded.frames > 1:
        print(f"uir-lora: note: {source} has {loaded.frames} frames; the first frame only is used", file=sys.stderr)
    return loaded


def _finish(failures: list[str], total: int) -> int:
    if not failures:
        return 0
    print(f"uir-lora: {len(failures)} of {total} inputs failed (see above): {', '.join(failures)}", file=sys.stderr)
    return 1


def run_restore(args: argparse.Namespace) -> int:
    if args.resume and args.overwrite:
        raise InputError("--resume keeps finished outputs and --overwrite replaces them; choose one")
    share = ProcessShare.current()  # one process, or this one's place under accelerate launch
    inputs = list_inputs(args.input)
    single = not args.input.is_dir()
    folder = args.input.parent if single else default_folder(args.input)
    targets = plan_outputs(inputs, args.output, folder, "restored", args.overwrite or args.resume, "-o")
    jobs = pending_jobs(list(zip(inputs, targets)), share, args.resume)
    bank = load_bank(args.bank, args.bank_dir)
    backbone = backbone_from_args(args, share)
    pixel_budget(args.max_pixels)
    # every option checked once, before the first image, used or not
    plan = plan_restore(backbone, bank, manual=parse_weights(args.weights), mode=args.mode, top_k=args.top_k,
                        temperature=args.temperature, fused=not args.unfused, strength=args.strength,
                        options=SamplerOptions(tile=args.tile, tile_batch=tile_batch(args, backbone)),
                        spatial=args.spatial, window=args.window)
    failures: list[str] = []
    for source, target in tqdm(jobs, desc="restore", unit="img", disable=len(jobs) <= 1 or not share.is_main):
        loaded = _read(source, args.max_pixels, failures)
        if loaded is None:
            continue
        with tqdm(total=1, desc=source.name, unit="tile", leave=False) as bar:
            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.n = done
                bar.refresh()

            restored, compositions = plan.run(loaded.image, progress)
        save_image(restored, target, alpha=loaded.alpha)
        weights = ", ".join(f"{k}={v:.2f}" for k, v in sorted(compositions[0].weights.items(), key=lambda kv: -kv[1]))
        kept = "; alpha kept" if loaded.alpha is not None else ""
        print(f"{source} -> {target}  [{compositions[0].source}: {weights or 'base only'}{kept}]")
        for note in compositions[0].notes:  # e.g. an unsure router's reduced strength, an unknown degradation
            print(f"  note: {note}")
    share.wait()  # the launcher's processes end together
    return _finish(failures, len(jobs))


def run_estimate(args: argparse.Namespace) -> int:
    bank = load_bank(args.bank, args.bank_dir)
    check_routing_options(bank, args.top_k, args.temperature, args.window)
    pixel_budget(args.max_pixels)
    inputs = list_inputs(args.input)
    maps = plan_outputs(inputs, args.map, None, "map", args.overwrite, "--map") if args.map else [None] * len(inputs)
    failures: list[str] = []
    for source, target in zip(inputs, maps):
        loaded = _read(source, args.max_pixels, failures)
        if loaded is None:
            continue
        (result,) = estimate(bank, loaded.image, args.top_k, args.temperature)
        print(f"== {source}")
        print(result.table())
        for note in restore_notes(bank, result):
            print(f"restore: {note}")
        if target is not None:
            (regions,) = estimate_spatial(bank, loaded.image, args.window, args.top_k, args.temperature)
            save_image(region_map_picture(loaded.image, regions), target)
            weights = ", ".join(f"{k}={v:.2f}" for k, v in regions.mean_weights().items())
            print(f"per-region map ({regions.weights[0].numel()} windows; average {weights}) -> {target}")
            for note in regions.notes:
                print(f"per-region: {note}")
    return _finish(failures, len(inputs))
