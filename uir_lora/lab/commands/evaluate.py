"""``uir-lora eval``: the quality benchmark against the alternatives (docs/benchmarks.md)."""

from __future__ import annotations

import argparse
import logging
import platform
import tempfile
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ...bank.store import LoraBank, open_bank
from ...degrade import KINDS
from ...errors import InputError
from ...pipeline import DEFAULT_BANK, default_backbone, load_bank

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="benchmark the bank against classical methods and baselines")
    p.add_argument("clean_dir", nargs="?", default="default",
                   help="folder of clean photos, or 'default' (scikit-image + scikit-learn + validation split)")
    p.add_argument("--out", type=Path, default=Path("docs"), help="where benchmarks.md, results/bench_quality.json and "
                   "img/bench_*.png go (default %(default)s)")
    p.add_argument("--kinds", nargs="+", choices=KINDS, help="only these kinds (and the mixed pairs among them)")
    p.add_argument("--no-pairs", action="store_true", help="skip the mixed pairs")
    p.add_argument("--max-images", type=int, help="use at most N images")
    p.add_argument("--size", type=int, default=256, help="centre crop side in px (default %(default)s)")
    p.add_argument("--bank", default=DEFAULT_BANK, help="bank name (default %(default)s)")
    p.add_argument("--bank-dir", action="append", default=[], help="extra folder holding banks")
    p.add_argument("--random-bank", action="store_true", help="smoke test: a random, untrained bank of every kind")
    p.add_argument("--multitask", type=Path, help="the full fine-tune baseline (train-lora --full-finetune output)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--severity", type=float, help="fix every degradation's severity in [0, 1] (default: random)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s)")
    p.add_argument("--shard", help="I/N: evaluate every N-th image from the I-th and save a part file in --out "
                   "(run N shards side by side, then --merge)")
    p.add_argument("--only", nargs="+", help="run only these methods (with --shard: adds them to a sharded run)")
    p.add_argument("--merge", type=Path, help="publish the part files of a sharded run found in this folder")
    p.set_defaults(run=run_eval)


def random_bank(root: Path) -> LoraBank:
    from ...router.encoder import DegradationEncoder
    from ..testing.banks import make_random_bank

    return open_bank(make_random_bank(root, default_backbone(), names=KINDS, dim=DegradationEncoder().dim,
                                      rank=4, bank_name="random-smoke"))


def bank_summary(bank: LoraBank) -> str:
    manifest = bank.manifest
    fitted = all(any(v != 0 for v in entry.embedding) for entry in manifest.loras)
    ranks = sorted({entry.rank for entry in manifest.loras})
    random = any("random" in str(entry.provenance.get("kind", "")) for entry in manifest.loras)
    steps = [entry.provenance.get("steps") for entry in manifest.loras if entry.provenance.get("steps")]
    budget = f"; training steps per LoRA {min(steps)}–{max(steps)} (total {sum(steps)})" if steps else ""
    return (f"{len(manifest.loras)} LoRAs ({', '.join(manifest.names)}), rank {'/'.join(map(str, ranks))}"
            f"{budget}; router top-{manifest.router.top_k}, temperature {manifest.router.temperature}; "
            f"router embeddings {'fitted' if fitted else '**all zero: routing is meaningless**'}"
            + ("; **random untrained LoRAs (smoke test)**" if random else ""))


def multitask_summary(info: dict, conditioning: dict) -> str:
    if not info:
        return "fully fine-tuned FFDNet"
    return (f"FFDNet fully fine-tuned on all {len(KINDS)} kinds at once: {info.get('steps')} steps of batch "
            f"{info.get('batch')} ({info.get('crop')}² crops) in {info.get('wall_seconds', 0):.0f} s "
            f"({info.get('machine')}, {info.get('threads')} thread(s)), {info.get('lr_schedule')}; fixed σ "
            f"{conditioning.get('sigma', 0) * 255:.0f}/255")


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run (non-default options only)."""
    parts = ["uir-lora eval", str(args.clean_dir), "--out", str(args.out)]
    for flag, value, default in (("--kinds", args.kinds, None), ("--max-images", args.max_images, None),
                                 ("--size", args.size, 256), ("--bank", args.bank, DEFAULT_BANK),
                                 ("--multitask", args.multitask, None), ("--seed", args.seed, 0),
                                 ("--severity", args.severity, None), ("--threads", args.threads, 1)):
        if value != default:
            parts += [flag, " ".join(value) if isinstance(value, list) else str(value)]
    parts += [flag for flag, on in (("--no-pairs", args.no_pairs), ("--random-bank", args.random_bank)) if on]
    return " ".join(parts)


def parse_shard(text: str | None) -> tuple[int, int]:
    if not text:
        return 0, 1
    try:
        shard, shards = (int(v) for v in text.split("/"))
        if not 0 <= shard < shards:
            raise ValueError
    except ValueError:
        raise InputError(f"--shard must look like 0/3 (I/N with 0 <= I < N), got {text!r}") from None
    return shard, shards


def written(part: dict) -> float:
    """When a part file was written (seconds since the epoch): the order in which parts replace each other."""
    return part["written"]


def latest_rows(parts: list[dict]) -> tuple[list[dict], dict]:
    """Rows and kept pictures of all parts; for each (image, case, method) the latest part's wins.

    A method re-run later with --only (same images, same seeds) so replaces its earlier rows: that
    is how a retrained router or bank is re-measured without re-running every baseline.
    """
    latest: dict[tuple[str, str, str], dict] = {}
    kept: dict = {}
    for part in sorted(parts, key=written):
        for row in part["rows"]:
            latest[(row["image"], row["case"], row["method"])] = row
        kept.update(part["kept"])
    return list(latest.values()), kept


def merge_parts(args: argparse.Namespace) -> int:
    """Publish the union of a sharded run's part files (images back in their original order)."""
    from ..evaluate import publish

    parts = [torch.load(p, weights_only=True) for p in sorted(args.merge.glob("bench_part_*_of_*.pt"))]
    if not parts:
        raise InputError(f"{args.merge}: no bench_part_*_of_*.pt files; run uir-lora eval --shard I/N first")
    if any("written" not in part or "stamp" not in part["meta"] for part in parts):
        raise InputError(f"{args.merge}: part files of an older format (no write time or version stamp); "
                         "run their shards again")
    order = dict(sorted((i, tuple(image)) for p in parts for i, image in zip(p["indices"], p["meta"]["images"])))
    main = [part for part in parts if part.get("tag", "_all_") == "_all_"]
    meta = {**(main or parts)[0]["meta"], "images": list(order.values()),
            "wall_s": max(part["meta"]["wall_s"] for part in parts)}
    first: dict[tuple[str, str], float] = {}  # each --only run's stamp, when its first part was written
    for part in sorted(parts, key=written):  # later --only runs describe what they ran
        if not part["meta"]["multitask_info"].startswith("not run"):
            meta["multitask_info"] = part["meta"]["multitask_info"]
        if {"router", "oracle"} & {row["method"] for row in part["rows"]}:
            meta["bank_info"] = part["meta"]["bank_info"]
        tag = part.get("tag", "_all_").strip("_")
        if tag != "all":
            first.setdefault((tag, part["meta"]["stamp"]), written(part))
    added = sorted(first, key=lambda key: (key[0], first[key]))
    meta["command"] += (f"` as {len(main)} parallel `--shard I/{len(main)}` runs at {meta['stamp']}"
                        + "".join(f" (plus `--only {tag.replace('_', ' ')}` at {stamp})" for tag, stamp in added)
                        + " merged by `uir-lora eval --merge")
    meta["stamp"] = publish.stamp()
    rows, kept = latest_rows(parts)
    doc = publish.publish(args.out, rows, kept, meta)
    print(f"wrote {doc} from {len(parts)} parts")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from ..evaluate import datasets, harness, publish

    if args.max_images is not None and args.max_images < 1:
        raise InputError(f"--max-images must be at least 1, got {args.max_images}")
    if args.merge:
        return merge_parts(args)
    torch.set_num_threads(args.threads)
    start, revision = time.perf_counter(), publish.commit()  # the code that runs, before any edit meanwhile
    images = datasets.evaluation_images(args.clean_dir, args.size, args.max_images)
    shard, shards = parse_shard(args.shard)
    indices = list(range(shard, len(images), shards))
    gallery_image = images[0][0]
    images = [images[i] for i in indices]
    with tempfile.TemporaryDirectory() as tmp:
        bank = random_bank(Path(tmp)) if args.random_bank else load_bank(args.bank, args.bank_dir)
        summary = bank_summary(bank)
        if "all zero" in summary:
            log.warning("bank %s has no fitted router embeddings: router rows are meaningless", bank.manifest.name)
        multitask = harness.load_multitask(args.multitask) if args.multitask else None
        cases = harness.default_cases(args.kinds, pairs=not args.no_pairs)
        with tqdm(total=len(images) * len(cases), desc="eval", unit="case") as bar:
            rows, kept = harness.evaluate(
                images, default_backbone(), bank, cases=cases, multitask=multitask, seed=args.seed,
                severity=args.severity, keep=publish.gallery_keep(gallery_image),
                progress=lambda done, total: bar.update(done - bar.n), indices=indices, only=args.only)
    meta = {
        "command": command_line(args),
        "stamp": publish.stamp(revision),
        "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}",
        "wall_s": time.perf_counter() - start, "size": args.size, "seed": args.seed,
        "images": [(name, harness.image_digest(image)) for name, image in images],
        "severity": "severity drawn from each kind's full training range" if args.severity is None
        else f"severity fixed at {args.severity}",
        "bank": "random-smoke" if args.random_bank else args.bank, "bank_info": summary,
        "multitask_info": "not run (no --multitask)" if multitask is None
        else multitask_summary(multitask.info, multitask.conditioning),
    }
    if args.shard:
        tag = "_".join(args.only or ["all"])
        part = args.out / f"bench_part_{tag}_{shard}_of_{shards}.pt"
        args.out.mkdir(parents=True, exist_ok=True)
        torch.save({"rows": rows, "kept": kept, "meta": meta, "indices": indices, "tag": f"_{tag}_",
                    "written": time.time()}, part)
        print(f"wrote {part}; publish all parts with: uir-lora eval --merge {args.out} --out DOCS")
        return 0
    doc = publish.publish(args.out, rows, kept, meta)
    print(f"wrote {doc}, {args.out / publish.QUALITY_JSON} and {args.out / 'img'}/bench_*.png")
    return 0
