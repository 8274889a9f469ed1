"""The independent check set: the bank on photos and damage it never saw, against classical filters.

    python benchmarks/wild.py --quick                     # a smoke test: 3 photos, moderate severity
    python benchmarks/wild.py --jobs 2 --doc docs/benchmarks.md     # the published run

Photos: the CHECK scenes of the Debian scene pool (tools/build_scene_pool.py; never trained or tuned on)
and the eight scikit-image / scikit-learn photos, as centre 512² crops (``--native``: whole photos).
Damage: benchmarks/checkset, a synthesis written apart from the training code, at fixed severities.

For each case it measures PSNR and SSIM of: the input; the best textbook classical method of the kind
(best of several, which favours the classical side); the automatic restore (pipeline.restore, router);
the right LoRA at weight 1 (mixtures: each single LoRA at 1, both at 0.5, both at 1); the pretrained
FFDNet told the true σ (Gaussian noise). It also records the router's top-1 on every single kind at every
severity, its top-2 on mixtures, and what the automatic restore does to the clean photos
(PSNR(output, input), the do-no-harm measure).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

from checkset import KINDS, MIXTURES, SEVERITIES, case_name, degrade  # noqa: E402
from checkset.synthesis import NOISE_SIGMAS  # noqa: E402

from uir_lora import pipeline  # noqa: E402
from uir_lora.images import array_to_tensor  # noqa: E402
from uir_lora.lab.evaluate import classical  # noqa: E402
from uir_lora.lab.evaluate.datasets import centre_crop, scene_photos  # noqa: E402
from uir_lora.lab.evaluate.harness import bare_restore  # noqa: E402
from uir_lora.lab.evaluate.metrics import psnr, ssim  # noqa: E402
from uir_lora.lab.evaluate.publish import commit, stamp  # noqa: E402
from uir_lora.lab.evaluate.report import replace_section  # noqa: E402
from uir_lora.lab.scenes import BUILD_HINT, load_scenes  # noqa: E402

Restorer = Callable[[torch.Tensor], torch.Tensor]
EXTRA_CLASSICAL: dict[str, dict[str, Restorer]] = {
    # the blind user's sharpening, beside deconvolution with an assumed PSF
    "motion_blur": {"unsharp": classical.unsharp},
    "defocus_blur": {"unsharp": classical.unsharp},
}
"""Classical methods added for this benchmark to those of uir_lora/lab/evaluate/classical.py."""
MIXTURE_SEVERITY = "moderate"
QUICK_PHOTOS = 3


def classical_for(kinds: tuple[str, ...]) -> dict[str, Restorer]:
    if len(kinds) == 1:
        return {**classical.CLASSICAL[kinds[0]], **EXTRA_CLASSICAL.get(kinds[0], {})}
    return classical.classical_methods(kinds)


def check_photos(size: int | None, max_photos: int | None, with_scenes: bool) -> list[tuple[str, np.ndarray]]:
    """(name, RGB uint8) of the CHECK scenes and the scikit photos; centre crops of ``size`` unless None."""
    scenes = [(f"scene:{Path(name).stem}", image) for name, image in load_scenes("CHECK")] if with_scenes else []
    scikit = [(f"scikit:{name}", (image[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8))
              for name, image in scene_photos()]
    # alternate the two sources, so any prefix (--max-photos, an interrupted run) holds both
    photos = [photo for pair in itertools.zip_longest(scenes, scikit) for photo in pair if photo is not None]
    if size:
        photos = [(name, centre_crop(torch.from_numpy(image.copy()).permute(2, 0, 1), size).permute(1, 2, 0).numpy())
                  for name, image in photos]
    else:  # the backbone wants even sides
        photos = [(name, image[: image.shape[0] // 2 * 2, : image.shape[1] // 2 * 2]) for name, image in photos]
    return photos[:max_photos]


def top_kinds(weights: dict[str, float], count: int) -> list[str]:
    return sorted(weights, key=weights.get, reverse=True)[:count]


def evaluate_photo(index: int, name: str, image: np.ndarray, options: dict) -> list[dict]:
    """Every measurement on one photo (a worker's unit of work)."""
    torch.set_num_threads(options["threads"])
    backbone, bank = pipeline.default_backbone(), pipeline.load_bank(options["bank"])
    clean = array_to_tensor(image)
    rows: list[dict] = []

    restored, weights = automatic_restore(clean, backbone, bank)
    rows.append({"photo": name, "case": "clean", "kinds": [], "severity": None, "method": "auto",
                 "psnr_vs_input": finite_or_none(psnr(restored, clean)), **weights})
    regional, (summary,) = pipeline.restore(clean, backbone, bank, spatial=True)
    rows.append({"photo": name, "case": "clean", "kinds": [], "severity": None, "method": "auto per region",
                 "psnr_vs_input": finite_or_none(psnr(regional, clean)), "weights": rounded(summary.weights)})

    cases = [((kind,), severity) for kind in KINDS for severity in SEVERITIES]
    cases += [(mixture, MIXTURE_SEVERITY) for mixture in MIXTURES]
    for case_index, (kinds, severity) in enumerate(cases):
        seed = options["seed"] + 1000 * index + case_index
        damaged = array_to_tensor(degrade(image, kinds, severity, seed))
        base = {"photo": name, "case": case_name(kinds), "kinds": list(kinds), "severity": severity, "seed": seed}
        if severity not in options["restore_severities"] and len(kinds) == 1:
            routing = pipeline.estimate(bank, damaged)[0]  # routing only: cheap
            rows.append({**base, "method": "route", "weights": rounded(routing.weights)})
            continue
        for method, restore in methods_for(kinds, severity, backbone, bank).items():
            started = time.perf_counter()
            output, extra = restore(damaged)
            rows.append({**base, "method": method, "seconds": round(time.perf_counter() - started, 3),
                         "psnr": psnr(output, clean), "ssim": ssim(output, clean), **extra})
    return rows


def rounded(weights: dict[str, float]) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in weights.items()}


def automatic_restore(x: torch.Tensor, backbone, bank) -> tuple[torch.Tensor, dict]:
    """``pipeline.restore``'s path, step by step: the router's weights (what the routing scores count) and the
    composition's (what was applied, after the bank's do-no-harm rules)."""
    routing = pipeline.estimate(bank, x)[0]
    composition = pipeline.compose(bank, routing)
    output = pipeline.restore_composed(x, backbone, [composition])
    return output, {"weights": rounded(routing.weights), "applied": rounded(composition.weights)}


def methods_for(kinds: tuple[str, ...], severity: str, backbone, bank) -> dict[str, Callable]:
    """name -> f(damaged) -> (output, extra fields); classical methods are prefixed "classical:"."""

    def auto(x):
        return automatic_restore(x, backbone, bank)

    def manual(weights):
        return lambda x: (pipeline.restore(x, backbone, bank, manual=weights, mode="manual")[0], {})

    methods: dict[str, Callable] = {"input": lambda x: (x, {}), "auto": auto}
    if len(kinds) == 1:
        methods["lora@1"] = manual({kinds[0]: 1.0})
    else:
        for kind in kinds:
            methods[f"lora@1:{kind}"] = manual({kind: 1.0})
        methods["loras@0.5"] = manual({kind: 0.5 for kind in kinds})
        methods["loras@1"] = manual({kind: 1.0 for kind in kinds})
    if kinds == ("noise",):
        sigma = NOISE_SIGMAS[SEVERITIES.index(severity)] / 255
        methods["ffdnet_true_sigma"] = lambda x: (bare_restore(backbone, x, {"sigma": sigma}), {})
    for name, function in classical_for(kinds).items():
        methods[f"classical:{name}"] = lambda x, f=function: (f(x), {})
    return methods


# ---------------------------------------------------------------- summary

def mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def summarise(rows: list[dict]) -> dict:
    """Per case: mean PSNR gain over the input of each method (and of the best classical one), routing."""
    restored = [r for r in rows if "psnr" in r]
    table: dict[str, dict] = {}
    for key in dict.fromkeys((r["case"], r["severity"]) for r in restored):
        case_rows = [r for r in restored if (r["case"], r["severity"]) == key]
        inputs = {r["photo"]: r["psnr"] for r in case_rows if r["method"] == "input"}
        methods: dict[str, list[float]] = {}
        for r in case_rows:
            methods.setdefault(r["method"], []).append(r["psnr"] - inputs[r["photo"]])
        gains = {m: mean(v) for m, v in methods.items()}
        best_classical = max((m for m in gains if m.startswith("classical:")), key=gains.get)
        singles = [m for m in gains if m.startswith("lora@1:")]
        table[f"{key[0]}@{key[1]}"] = {
            "case": key[0], "severity": key[1], "n": len(inputs), "input_psnr": mean(list(inputs.values())),
            "gain": gains, "best_classical": best_classical,
            "best_single_lora": max(singles, key=gains.get) if singles else None,
        }
    return {"cases": table, "routing": routing_summary(rows), "clean": clean_summary(rows),
            "clean_per_region": clean_summary(rows, "auto per region")}


def routing_summary(rows: list[dict]) -> dict:
    """Router top-1 per kind and severity (single kinds), top-2 on mixtures, from every routed row."""
    routed = [r for r in rows if r["method"] in ("route", "auto") and r["kinds"] and "weights" in r]
    single: dict[str, dict[str, list[bool]]] = {}
    mixed: dict[str, list[bool]] = {}
    applied: dict[str, list[bool]] = {}
    confusion: dict[str, dict[str, int]] = {}
    for r in routed:
        if len(r["kinds"]) == 1:
            top = (top_kinds(r["weights"], 1) or ["none"])[0]
            single.setdefault(r["case"], {}).setdefault(r["severity"], []).append(top == r["case"])
            confusion.setdefault(r["case"], {}).setdefault(top, 0)
            confusion[r["case"]][top] += 1
        else:
            mixed.setdefault(r["case"], []).append(set(r["kinds"]) <= set(top_kinds(r["weights"], 2)))
            if "applied" in r:  # the restore may leave out a weak second kind the router kept (router.follower_floor)
                applied.setdefault(r["case"], []).append(set(r["kinds"]) <= set(r["applied"]))
    per_kind = {kind: {sev: mean(hits) for sev, hits in sevs.items()} | {"all": mean(sum(sevs.values(), []))}
                for kind, sevs in single.items()}
    every = [h for sevs in single.values() for hits in sevs.values() for h in hits]
    moderate_strong = [h for sevs in single.values() for s, hits in sevs.items() if s != "mild" for h in hits]
    return {"top1_per_kind": per_kind, "top1_all": mean(every), "top1_moderate_strong": mean(moderate_strong),
            "top2_mixtures": {case: mean(hits) for case, hits in mixed.items()},
            "top2_mixtures_all": mean([h for hits in mixed.values() for h in hits]), "confusion": confusion,
            "both_applied_mixtures": {case: mean(hits) for case, hits in applied.items()},
            "both_applied_mixtures_all": mean([h for hits in applied.values() for h in hits])}


def finite_or_none(value: float) -> float | None:
    """JSON has no infinity: a PSNR(output, input) of None means the output is the input itself."""
    return None if math.isinf(value) else value


def clean_summary(rows: list[dict], method: str = "auto") -> dict:
    """The clean photos through one restore (``auto``: global; ``auto per region``: ``--spatial``)."""
    clean = [r for r in rows if r["case"] == "clean" and r["method"] == method]
    values = np.array([math.inf if r["psnr_vs_input"] is None else r["psnr_vs_input"] for r in clean])
    tops = [(top_kinds(r["weights"], 1) or ["none"])[0] for r in clean]
    return {"n": len(clean), "median_psnr_vs_input": finite_or_none(float(np.median(values))) if len(values) else None,
            "share_at_least_40db": mean(list(values >= 40)), "below_30db": int((values < 30).sum()),
            "min_psnr_vs_input": finite_or_none(float(values.min())) if len(values) else None,
            "returned_unchanged": int(np.isinf(values).sum()),  # PSNR(output, input) is infinite only for the input
            "routed_clean_or_nothing": mean([t in ("clean", "none") for t in tops]),
            "top1": {t: tops.count(t) for t in sorted(set(tops))}}


def decibels(value: float | None) -> str:
    """A clean photo's PSNR(output, input); None: the output is the input itself."""
    return "∞ (the input itself)" if value is None else f"{value:.1f} dB"


def fmt(value: float | None, sign: bool = True) -> str:
    if value is None:
        return "–"
    return f"{value:+.2f}" if sign else f"{value:.2f}"


def markdown(summary: dict, meta: dict) -> str:
    lines = [f"Generated by `{meta['command']}` at {meta['stamp']} "
             f"({meta['machine']}); {meta['photos_n']} photos ({meta['crop']}), wall time {meta['seconds']:.0f} s.",
             "", f"- **Photos**: {', '.join(f'{n} (`{h[:12]}`)' for n, h in meta['photos'].items())}.",
             "- **Damage**: benchmarks/checkset (written apart from the training synthesis); single kinds at "
             f"{', '.join(meta['restore_severities'])} severity for the restore columns; mixtures at "
             f"{MIXTURE_SEVERITY}; routing at every severity.",
             "- **Columns**: mean PSNR gain over the damaged input (dB). *classical*: the best of the kind's "
             "textbook methods (named); *auto*: `pipeline.restore` with the router; *LoRA@1*: the true kind's "
             "LoRA at weight 1 (mixtures: the better single LoRA at 1); *both@0.5* / *both@1*: both LoRAs of "
             "a mixture.", "",
             "| case | input PSNR | classical | auto | LoRA@1 | both@0.5 | both@1 | router top-1 / top-2 |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    routing = summary["routing"]
    for stats in summary["cases"].values():
        gain = stats["gain"]
        best = stats["best_classical"]
        lora = gain.get("lora@1") if stats["best_single_lora"] is None else gain[stats["best_single_lora"]]
        mixture = stats["best_single_lora"] is not None
        hit = (routing["top2_mixtures"].get(stats["case"]) if mixture
               else routing["top1_per_kind"].get(stats["case"], {}).get(stats["severity"]))
        extra = f" (FFDNet true σ {fmt(gain['ffdnet_true_sigma'])})" if "ffdnet_true_sigma" in gain else ""
        lines.append(f"| {stats['case']} ({stats['severity']}) | {fmt(stats['input_psnr'], False)} | "
                     f"{fmt(gain[best])} ({best.removeprefix('classical:')}){extra} | {fmt(gain['auto'])} | "
                     f"{fmt(lora)} | {fmt(gain.get('loras@0.5'))} | {fmt(gain.get('loras@1'))} | "
                     f"{'–' if hit is None else f'{hit:.0%}'} |")
    means = {column: mean([s["gain"].get(key) if key else s["gain"][s["best_classical"]]
                           for s in summary["cases"].values()])
             for column, key in (("classical", None), ("auto", "auto"))}
    lines += ["", f"- **Mean gain over the cases above**: classical {fmt(means['classical'])} dB, "
              f"auto {fmt(means['auto'])} dB."]
    lines += routing_markdown(routing) + clean_markdown(summary["clean"])
    lines += clean_markdown(summary.get("clean_per_region", {"n": 0}), "the per-region restore (`--spatial`)")
    lines += goals_table(summary)
    return "\n".join(lines) + "\n"


def goals(summary: dict) -> list[tuple[str, str, bool]]:
    """The done-when lines of the engine issue (14) and the router issue (15), measured here."""
    cases = list(summary["cases"].values())
    singles = [c for c in cases if c["best_single_lora"] is None]
    mixtures = [c for c in cases if c["best_single_lora"] is not None]

    def shortfalls(items, better, worse, margin=0.0):
        return [f"{c['case']} ({fmt(c['gain'][better(c)] - c['gain'][worse(c)])})" for c in items
                if c["gain"].get(better(c), -np.inf) < c["gain"][worse(c)] + margin]

    def best(c):
        return c["best_classical"]

    def composed(c):
        return max(("loras@0.5", "loras@1"), key=lambda method: c["gain"].get(method, -np.inf))

    rows = []
    for label, items, better, worse, margin in (
            ("auto > best classical, every kind and mixture", cases, lambda c: "auto", best, 0.0),
            ("right LoRA at 1 > best classical, every kind", singles, lambda c: "lora@1", best, 0.0),
            ("composed LoRAs ≥ best single LoRA + 0.3 dB, every mixture", mixtures, composed,
             lambda c: c["best_single_lora"], 0.3)):
        missed = shortfalls(items, better, worse, margin)
        rows.append((f"(14) {label}", f"{len(items) - len(missed)}/{len(items)}"
                     + (f"; short: {', '.join(missed)}" if missed else ""), not missed))
    below = [c["case"] for c in singles if c["gain"]["auto"] <= 0]
    rows.append(("(14) auto above the input, every kind", f"{len(singles) - len(below)}/{len(singles)}"
                 + (f"; not: {', '.join(below)}" if below else ""), not below))
    routing, clean = summary["routing"], summary["clean"]
    if routing["top1_all"] is not None:
        weakest = min(routing["top1_per_kind"].items(), key=lambda item: item[1]["all"])
        rows += [("(15) top-1 ≥ 95 % at moderate and strong", f"{routing['top1_moderate_strong']:.1%}",
                  routing["top1_moderate_strong"] >= 0.95),
                 ("(15) top-1 ≥ 90 % over all severities", f"{routing['top1_all']:.1%}", routing["top1_all"] >= 0.9),
                 ("(15) every kind's top-1 ≥ 85 %", f"weakest {weakest[0]} {weakest[1]['all']:.0%}",
                  weakest[1]["all"] >= 0.85)]
    if routing["top2_mixtures_all"] is not None:
        rows.append(("(15) both kinds in the top 2 on ≥ 80 % of mixtures", f"{routing['top2_mixtures_all']:.0%}",
                     routing["top2_mixtures_all"] >= 0.8))
    if clean["n"]:
        rows += [("(15) clean photos: PSNR(output, input) ≥ 40 dB on ≥ 95 %", f"{clean['share_at_least_40db']:.0%}",
                  clean["share_at_least_40db"] >= 0.95),
                 ("(15) clean photos: none below 30 dB", f"{clean['below_30db']} below (minimum "
                  f"{decibels(clean['min_psnr_vs_input'])})", clean["below_30db"] == 0)]
    return rows


def goals_table(summary: dict) -> list[str]:
    lines = ["| goal (issue) | measured | met |", "|---|---|---|"]
    lines += [f"| {goal} | {measured} | {'yes' if met else '**no**'} |" for goal, measured, met in goals(summary)]
    return ["", *lines]


def routing_markdown(routing: dict) -> list[str]:
    lines = ["", "Router top-1 on single kinds (share of photos whose largest weight is the true kind):", "",
             "| kind | " + " | ".join(SEVERITIES) + " | all | most often routed to |",
             "|---|" + "---:|" * (len(SEVERITIES) + 1) + "---|"]
    for kind, hits in routing["top1_per_kind"].items():
        confusion = sorted(routing["confusion"][kind].items(), key=lambda item: -item[1])[:3]
        lines.append(f"| {kind} | " + " | ".join(fmt(hits.get(s), False) if hits.get(s) is None else f"{hits[s]:.0%}"
                                                  for s in SEVERITIES)
                     + f" | {hits['all']:.0%} | {', '.join(f'{k} {v}' for k, v in confusion)} |")
    lines += ["", f"- **Top-1 over all severities**: {routing['top1_all']:.1%}; at moderate and strong: "
                  f"{routing['top1_moderate_strong']:.1%}." if routing["top1_all"] is not None else "",
              f"- **Both kinds in the top 2 on mixtures**: {routing['top2_mixtures_all']:.0%} "
              f"({', '.join(f'{k} {v:.0%}' for k, v in routing['top2_mixtures'].items())})."
              if routing["top2_mixtures_all"] is not None else "",
              f"- **Both kinds applied by the automatic restore on mixtures**: "
              f"{routing['both_applied_mixtures_all']:.0%} "
              f"({', '.join(f'{k} {v:.0%}' for k, v in routing['both_applied_mixtures'].items())})."
              if routing.get("both_applied_mixtures_all") is not None else ""]
    return lines


def clean_markdown(clean: dict, restore: str = "the automatic restore") -> list[str]:
    if not clean["n"]:
        return []
    return [f"- **Clean photos through {restore}** ({clean['n']}): returned unchanged on "
            f"{clean.get('returned_unchanged', 0)}; PSNR(output, input) median "
            f"{decibels(clean['median_psnr_vs_input'])}, minimum {decibels(clean['min_psnr_vs_input'])}; "
            f"≥ 40 dB on {clean['share_at_least_40db']:.0%}; below 30 dB on {clean['below_30db']}; routed to "
            f"`clean` (or nothing) on {clean['routed_clean_or_nothing']:.0%} (top-1: "
            f"{', '.join(f'{k} {v}' for k, v in clean['top1'].items())})."]


# ---------------------------------------------------------------- entry point

def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_PHOTOS} photos, moderate severity only: a smoke test of a few minutes")
    parser.add_argument("--max-photos", type=int, help="at most this many photos (scenes first)")
    parser.add_argument("--size", type=int, default=512, help="centre crop side (default 512)")
    parser.add_argument("--native", action="store_true", help="whole photos instead of centre crops")
    parser.add_argument("--restore-severities", nargs="+", default=["moderate"], choices=SEVERITIES,
                        help="severities of single kinds that are restored and scored (all are routed)")
    parser.add_argument("--skip-photos", type=int, default=0,
                        help="leave out the first N photos (run parts in parallel; merge with --summarise)")
    parser.add_argument("--no-scenes", action="store_true", help="only the scikit photos (no scene pool)")
    parser.add_argument("--bank", default=pipeline.DEFAULT_BANK)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="photos evaluated in parallel processes")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results", help="folder for JSON and markdown")
    parser.add_argument("--name", default="wild_check", help="file stem of the outputs")
    parser.add_argument("--doc", type=Path, help="also write the table into this markdown file's 'wild' section")
    parser.add_argument("--summarise", type=Path, metavar="ROWS.jsonl",
                        help="only summarise the rows an interrupted run kept (<out>/<name>.partial.jsonl)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.summarise:
        return summarise_partial(args)
    started, revision = time.time(), commit()  # the code that ran, before anything is edited during a long run
    try:
        photos = check_photos(None if args.native else args.size,
                              QUICK_PHOTOS if args.quick and not args.max_photos else args.max_photos,
                              with_scenes=not args.no_scenes)
    except ValueError as exc:  # the scene pool is missing: say how to build it
        print(f"error: {exc}\n(or run with --no-scenes for the scikit photos alone; {BUILD_HINT})", file=sys.stderr)
        return 2
    if args.quick:
        args.restore_severities = ["moderate"]
    options = {"bank": args.bank, "seed": args.seed, "restore_severities": args.restore_severities,
               "threads": max(1, torch.get_num_threads() // max(1, args.jobs))}
    rows: list[dict] = []
    args.out.mkdir(parents=True, exist_ok=True)
    partial = args.out / f"{args.name}.partial.jsonl"  # kept per photo: an interrupted run can still be summarised
    partial.write_text("")
    with ProcessPoolExecutor(args.jobs) if args.jobs > 1 else _Inline() as pool:
        futures = [pool.submit(evaluate_photo, i, name, image, options) for i, (name, image) in enumerate(photos)
                   if i >= args.skip_photos]  # the index fixes the photo's seeds: runs of parts agree with a whole
        for done, future in enumerate(futures, 1):
            photo_rows = future.result()
            rows += photo_rows
            with partial.open("a") as handle:
                handle.writelines(json.dumps(row) + "\n" for row in photo_rows)
            print(f"[{done}/{len(futures)}] {time.time() - started:.0f} s", flush=True)
    meta = {"command": "python benchmarks/wild.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "stamp": stamp(revision), "machine": f"{platform.machine()} CPU, torch {torch.__version__}",
            "photos_n": len(photos), "crop": "whole photos" if args.native else f"centre {args.size}² crops",
            "photos": {name: hashlib.sha256(image.tobytes()).hexdigest() for name, image in photos},
            "restore_severities": args.restore_severities, "seconds": time.time() - started,
            "bank": args.bank, "seed": args.seed}
    write_outputs(args, rows, meta)
    partial.unlink()
    return 0


def write_outputs(args: argparse.Namespace, rows: list[dict], meta: dict) -> None:
    """<out>/<name>.json (meta, summary, every row), <out>/<name>.md, and the --doc section."""
    summary = summarise(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    head = json.dumps({"meta": meta, "summary": summary}, indent=1)[:-2]  # one row per line keeps the file small
    body = ",\n".join(json.dumps(row) for row in rows)
    (args.out / f"{args.name}.json").write_text(f'{head},\n "rows": [\n{body}\n ]\n}}\n')
    text = markdown(summary, meta)
    (args.out / f"{args.name}.md").write_text("# Independent check set\n\n" + text)
    if args.doc:
        replace_section(args.doc, "wild", text)
    print(text)


def summarise_partial(args: argparse.Namespace) -> int:
    """Outputs from the rows of an interrupted run; the photos are those that finished."""
    rows = [json.loads(line) for line in args.summarise.read_text().splitlines() if line.strip()]
    photos = list(dict.fromkeys(r["photo"] for r in rows))
    digests = {name: hashlib.sha256(image.tobytes()).hexdigest()
               for name, image in check_photos(None if args.native else args.size, None, not args.no_scenes)}
    meta = {"command": f"python benchmarks/wild.py {' '.join(sys.argv[1:])} (rows of an interrupted run)",
            "stamp": stamp(), "machine": f"{platform.machine()} CPU, torch {torch.__version__}",
            "photos_n": len(photos), "crop": "whole photos" if args.native else f"centre {args.size}² crops",
            "photos": {p: digests[p] for p in photos},
            "restore_severities": args.restore_severities, "seconds": float("nan"), "bank": args.bank,
            "seed": args.seed}
    write_outputs(args, rows, meta)
    return 0


class _Inline:
    """ProcessPoolExecutor's interface, run in this process (--jobs 1: simpler tracebacks, no pickling)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def submit(self, function, *args):
        result = function(*args)
        return type("Done", (), {"result": lambda self: result})()


if __name__ == "__main__":
    sys.exit(main())
