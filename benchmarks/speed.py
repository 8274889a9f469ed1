"""Speed and memory of the pipeline against the bare backbone (docs/benchmarks.md, section "Speed").

    python benchmarks/speed.py                      # CPU, 1 thread: docs/results/bench_speed.json + the doc section
    python benchmarks/speed.py --device cuda --dtype bf16   # on a GPU machine

Every measured function runs once untimed (first-call work: attaching the bank, building the
encoder), then ``--repeats`` interleaved repeats (bare, route, ..., bare, route, ...) so that a change
of load on a shared machine hits every row alike; each row is the median over the repeats, with the
spread (min-max). The headline ratio is the median of the per-repeat ratios pipeline / bare. The
worst case adds every global adapter of the bank (haze's dehazing included) to the routed LoRAs: the
most a restore of this bank can cost. The 4000x3000 image runs in a child process per case so each
peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from uir_lora import pipeline
from uir_lora.backbones.registry import load_backbone
from uir_lora.bank.store import LoraBank, open_bank
from uir_lora.compose.composer import Composition, composed
from uir_lora.degrade import KINDS, degrade
from uir_lora.errors import UIRError
from uir_lora.lab.evaluate.harness import bare_restore
from uir_lora.lab.evaluate.publish import SPEED_JSON, commit, stamp, write_json
from uir_lora.lab.evaluate.report import replace_section
from uir_lora.sampler.restore import SamplerOptions, global_stage, restore_batch
from uir_lora.sampler.tiling import count_tiles

CPU_CLOCK = True  # set False for GPU runs (main)
RANDOM = "random"
DOCS = Path(__file__).resolve().parents[1] / "docs"


def peak_rss_gb() -> float:
    """This process's peak resident set size (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def interleaved(functions: Mapping[str, Callable[[], object]], repeats: int, sync: Callable[[], None]) -> dict:
    """Seconds of every function in each of ``repeats`` repeats, after one untimed warm-up call each: CPU
    time of this process on the CPU (robust to other jobs sharing the cores), wall time with a device
    sync elsewhere. Each repeat calls every function once, so that load changes affect them alike."""
    clock = time.process_time if CPU_CLOCK else time.perf_counter
    for function in functions.values():
        function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            sync()
            start = clock()
            function()
            sync()
            times[name].append(clock() - start)
    return times


def get_bank(name: str, root: Path, backbone) -> tuple[LoraBank, str]:
    """The named bank, or a random one shaped like the shipped bank (``name`` "random", or when it is
    missing): timing and memory depend on the LoRAs' shapes, not on what they learned."""
    if name != RANDOM:
        try:
            bank = pipeline.load_bank(name)
            return bank, f"`{name}` ({len(bank.manifest.loras)} LoRAs, rank {bank.manifest.loras[0].rank})"
        except (UIRError, FileNotFoundError):
            pass
    from uir_lora.lab.testing.banks import make_random_bank
    from uir_lora.router.encoder import DegradationEncoder

    names = (*KINDS, "clean")
    bank = open_bank(make_random_bank(root, backbone, names=names, dim=DegradationEncoder().dim, rank=16))
    return bank, f"random stand-in shaped like the shipped bank ({len(names)} LoRAs, rank 16, all 12 convolutions)"


def photo(size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """A noisy, JPEG'd natural photo resized to ``size`` (H, W), so the router has something to route."""
    from skimage import data

    image = torch.from_numpy(data.astronaut().copy()).permute(2, 0, 1)[None].float() / 255
    image = torch.nn.functional.interpolate(image, size=size, mode="bicubic", align_corners=False).clamp(0, 1)
    return degrade(image, ["noise", "jpeg"], generator=torch.Generator().manual_seed(seed), severity=0.5)


def global_kinds(bank: LoraBank) -> list[str]:
    """The bank's kinds with a global adapter."""
    return [entry.name for entry in bank.manifest.loras if entry.global_stage]


def worst_case(backbone, bank: LoraBank, x: torch.Tensor, options: SamplerOptions | None = None) -> torch.Tensor:
    """Route, then restore with the routed LoRAs and every global adapter of the bank at 0.5 on top."""
    (routing,) = pipeline.estimate(bank, x)
    weights = {**routing.weights, **{kind: 0.5 for kind in global_kinds(bank)}}
    return pipeline.restore(x, backbone, bank, manual=weights, mode="manual", options=options)[0]


def coarse_kinds(bank: LoraBank) -> list[str]:
    """The bank's kinds that run coarse-to-fine (``LoraEntry.coarsest_side``)."""
    return [entry.name for entry in bank.manifest.loras if entry.coarsest_side]


def coarse_case(backbone, bank: LoraBank, x: torch.Tensor, options: SamplerOptions | None = None) -> torch.Tensor:
    """Route, then restore with the bank's coarse-to-fine kinds at 1: a pass on the pyramid."""
    pipeline.estimate(bank, x)
    weights = {kind: 1.0 for kind in coarse_kinds(bank)}
    return pipeline.restore(x, backbone, bank, manual=weights, mode="manual", options=options)[0]


def small_image_timings(backbone, bank, repeats: int, sync) -> dict:
    """512² timings: bare backbone, router, composition, full pipeline, fused vs unfused, switching."""
    x = photo((512, 512))
    pipeline.restore(x, backbone, bank)  # warm-up: attaches the bank once, loads the encoder
    (routing,) = pipeline.estimate(bank, x)
    composition = pipeline.compose(bank, routing)
    unfused = Composition(bank=bank, weights=composition.weights, fused=False)
    sigma = composition.conditioning(backbone)
    encoder = pipeline.router_for(bank).encoder

    def compose_only(c: Composition = composition) -> None:
        with composed(backbone, c):
            pass

    functions = {
        "bare_s": lambda: bare_restore(backbone, x, sigma),
        "pipeline_s": lambda: pipeline.restore(x, backbone, bank),
        "route_s": lambda: pipeline.estimate(bank, x),
        "encoder_s": lambda: encoder.features(x),
        "compose_s": compose_only,
        "fused_s": lambda: restore_batch(backbone, x, [composition]),
        "unfused_s": lambda: restore_batch(backbone, x, [unfused]),
        "switch_per_image_s": switching(backbone, bank),
    }
    if global_kinds(bank):
        every_adapter = pipeline.compose(bank, None, {kind: 0.5 for kind in global_kinds(bank)}, "manual")
        functions["global_s"] = lambda: global_stage(x, every_adapter)
        functions["worst_s"] = lambda: worst_case(backbone, bank, x)
    if coarse_kinds(bank):
        functions["coarse_s"] = lambda: coarse_case(backbone, bank, x)
    load_before = os.getloadavg()
    times = interleaved(functions, repeats, sync)
    times["switch_per_image_s"] = [t / 4 for t in times["switch_per_image_s"]]
    ratios = [p / b for p, b in zip(times["pipeline_s"], times["bare_s"])]
    results = {name: statistics.median(values) for name, values in times.items()}
    results.update(
        spread={name: [min(values), max(values)] for name, values in times.items()},
        routing_composition_ratio=statistics.median(ratios),
        ratio_spread=[min(ratios), max(ratios)],
        load_average=[round(v, 2) for v in (*load_before, *os.getloadavg())],
        weights={k: round(v, 3) for k, v in composition.weights.items()},
        per_megapixel_s=statistics.median(times["pipeline_s"]) / (512 * 512 / 1e6),
        switch_reloaded=False,
        global_kinds=global_kinds(bank),
    )
    if "worst_s" in times:
        worst = [w / b for w, b in zip(times["worst_s"], times["bare_s"])]
        results.update(worst_ratio=statistics.median(worst), worst_ratio_spread=[min(worst), max(worst)])
    if "coarse_s" in times:
        coarse = [c / b for c, b in zip(times["coarse_s"], times["bare_s"])]
        results.update(coarse_ratio=statistics.median(coarse), coarse_ratio_spread=[min(coarse), max(coarse)],
                       coarse_kinds=coarse_kinds(bank))
    adapters = list(backbone.adapter_names())
    functions["switch_per_image_s"]()
    results["switch_reloaded"] = backbone.adapter_names() != adapters
    return results


def switching(backbone, bank) -> Callable[[], None]:
    """Four images, each with other manual weights, through one attached bank: no file is re-read."""
    images = torch.cat([photo((512, 512), seed) for seed in range(4)])
    names = bank.manifest.names
    manual = [{names[i % len(names)]: 1.0, names[(i + 3) % len(names)]: 0.5} for i in range(4)]

    def run() -> None:
        for image, weights in zip(images.split(1), manual):
            pipeline.restore(image, backbone, bank, manual=weights, mode="manual")

    return run


def big_image(tile: int, bank_name: str, worst: bool = False, coarse: bool = False) -> dict:
    """One 4000x3000 image through the whole pipeline with tiles (run in a child process); ``worst``: with every
    global adapter of the bank as well; ``coarse``: with the bank's coarse-to-fine kinds at 1 instead."""
    backbone = pipeline.default_backbone()
    with tempfile.TemporaryDirectory() as tmp:
        bank, _ = get_bank(bank_name, Path(tmp), backbone)
        x = photo((3000, 4000))
        rss_before = peak_rss_gb()
        start, cpu_start = time.perf_counter(), time.process_time()
        options = SamplerOptions(tile=tile)
        if worst:
            out = worst_case(backbone, bank, x, options)
        elif coarse:
            out = coarse_case(backbone, bank, x, options)
        else:
            out = pipeline.restore(x, backbone, bank, options=options)[0]
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    tiles = count_tiles(3000, 4000, tile, backbone.tile_overlap, backbone.size_multiple)
    return {"seconds": seconds, "cpu_seconds": cpu, "tiles": tiles, "tile": tile,
            "peak_rss_gb": peak_rss_gb(), "rss_before_gb": rss_before, "finite": bool(torch.isfinite(out).all())}


def speed_markdown(result: dict) -> str:
    s = result["small"]
    bare = s["bare_s"]

    def row(label: str, key: str, digits: int = 0) -> str:
        low, high = (1000 * v for v in s["spread"][key])
        ratio = f"{s[key] / bare:.{3 if s[key] < 0.1 * bare else 2}f}×"
        return f"| {label} | {1000 * s[key]:.{digits}f} ms | {low:.{digits}f}–{high:.{digits}f} | {ratio} |"

    low, high = s["ratio_spread"]
    load = s.get("load_average")
    lines = [
        "## Speed and memory", "",
        f"Generated by `{result['command']}` at {result['stamp']} ({result['machine']}); bank {result['bank']}. "
        f"{result['clock']}. Every function ran once untimed (first-call work), then {result['repeats']} "
        f"interleaved repeats; each time is the median over the repeats, with its spread (min–max)"
        + (f"; load average {load[0]:.1f} before, {load[3]:.1f} after (2 cores)." if load else "."), "",
        "| 512² image | median | spread | vs bare backbone |", "|---|---|---|---|",
        row("bare backbone (FFDNet, no LoRA)", "bare_s"),
        row("router alone (encoder + s_o = d·B + top-K)", "route_s"),
        row("router's encoder alone (the crops it reads from the image)", "encoder_s"),
        row("composition alone (merge top-K into the weights and restore)", "compose_s", 1),
        f"| **full pipeline** (route + fused composition + backbone) | {1000 * s['pipeline_s']:.0f} ms | "
        f"{1000 * s['spread']['pipeline_s'][0]:.0f}–{1000 * s['spread']['pipeline_s'][1]:.0f} | "
        f"**{s['routing_composition_ratio']:.2f}×** (per repeat {low:.2f}–{high:.2f}) |",
        row("fused composition, backbone pass", "fused_s"),
        row("unfused composition (peft adapters beside the weights)", "unfused_s"),
        row("switching weights per image (4 images, other weights each, no reload)", "switch_per_image_s"),
    ]
    if "worst_s" in s:
        kinds = ", ".join(s["global_kinds"])
        low, high = s["worst_ratio_spread"]
        lines += [
            row(f"global stage alone (every global adapter at once: {kinds})", "global_s", 1),
            f"| **worst case** (route + every global adapter + the routed LoRAs fused + backbone) | "
            f"{1000 * s['worst_s']:.0f} ms | {1000 * s['spread']['worst_s'][0]:.0f}–"
            f"{1000 * s['spread']['worst_s'][1]:.0f} | **{s['worst_ratio']:.2f}×** (per repeat {low:.2f}–{high:.2f}) |",
        ]
    if "coarse_s" in s:
        low, high = s["coarse_ratio_spread"]
        lines.append(f"| **coarse to fine** (route + {', '.join(s['coarse_kinds'])} at 1, a pass on the pyramid) | "
                     f"{1000 * s['coarse_s']:.0f} ms | {1000 * s['spread']['coarse_s'][0]:.0f}–"
                     f"{1000 * s['spread']['coarse_s'][1]:.0f} | **{s['coarse_ratio']:.2f}×** (per repeat "
                     f"{low:.2f}–{high:.2f}) |")
    lines += [
        "",
        f"- The full pipeline's ratio is the median of the per-repeat ratios pipeline / bare. Full pipeline per "
        f"megapixel: **{s['per_megapixel_s']:.2f} s/MP**; router weights on the test image: {s['weights']}; "
        f"adapters re-loaded while switching: {s['switch_reloaded']}.",
        f"- Peak RSS of the 512² run (process, incl. torch and the encoder): {result['small_peak_rss_gb']:.2f} GB.",
    ]
    for key, what in (("big_image", "routed"), ("big_image_worst", "worst case, every global adapter too"),
                      ("big_image_coarse", "coarse to fine, the bank's coarse-to-fine kinds at 1")):
        big = result.get(key)
        if big:
            lines.append(f"- **4000×3000**, {what}, through {big['tiles']} tiles of {big['tile']}²: "
                         f"{big['cpu_seconds']:.0f} s CPU ({big['seconds']:.0f} s wall on the shared machine), peak "
                         f"RSS **{big['peak_rss_gb']:.2f} GB** ({big['rss_before_gb']:.2f} GB before the restore: "
                         f"torch, the encoder and the 144 MB input); output finite: {big['finite']}.")
    lines.append("- GPU: not measured yet; on a CUDA machine run "
                 "`python benchmarks/speed.py --device cuda --dtype bf16 --out /tmp/gpu` (SD-Turbo: docs/sd_turbo.md).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DOCS, help="folder of benchmarks.md (default docs/)")
    parser.add_argument("--bank", default=pipeline.DEFAULT_BANK, help="bank name, or 'random' (same shapes)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7, help="interleaved timed repeats (default 7)")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument("--skip-big", action="store_true", help="skip the 4000x3000 image")
    parser.add_argument("--big-only", action="store_true", help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--worst", action="store_true", help=argparse.SUPPRESS)  # the child's case
    parser.add_argument("--coarse", action="store_true", help=argparse.SUPPRESS)  # the child's case
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.big_only:
        print(json.dumps(big_image(args.tile, args.bank, args.worst, args.coarse)))
        return 0
    revision = commit()  # the code that runs, before any edit made meanwhile
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    backbone = load_backbone("embedded-ffdnet", device=args.device, dtype=dtype)  # the cached master stays put
    global CPU_CLOCK
    CPU_CLOCK = args.device == "cpu"
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    with tempfile.TemporaryDirectory() as tmp:
        bank, bank_info = get_bank(args.bank, Path(tmp), backbone)
        result = {"small": small_image_timings(backbone, bank, args.repeats, sync), "small_peak_rss_gb": peak_rss_gb()}
    result.update(command=" ".join(["python benchmarks/speed.py", *(argv if argv is not None else sys.argv[1:])]),
                  stamp=stamp(revision), repeats=args.repeats, bank=bank_info,
                  machine=f"{platform.machine()} {args.device}, {args.threads} torch thread(s), {args.dtype}",
                  routing_composition_ratio=result["small"]["routing_composition_ratio"],
                  clock="CPU time of the benchmark process (other jobs shared the 2 cores, so wall time would "
                        "measure them too)" if CPU_CLOCK else "wall time with device synchronisation")
    if not args.skip_big and args.device == "cpu":
        command = [sys.executable, __file__, "--big-only", "--threads", str(args.threads), "--tile", str(args.tile),
                   "--bank", args.bank]
        cases = [("big_image", []), ("big_image_worst", ["--worst"])]
        if coarse_kinds(bank):
            cases.append(("big_image_coarse", ["--coarse"]))
        for key, extra in cases:
            child = subprocess.run(command + extra, capture_output=True, text=True, check=True)
            result[key] = json.loads(child.stdout.strip().splitlines()[-1])
    write_json(args.out / SPEED_JSON, result)
    replace_section(args.out / "benchmarks.md", "speed", speed_markdown(result))
    print(speed_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
