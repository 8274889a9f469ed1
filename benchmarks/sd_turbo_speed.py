"""One-step restore time (and GPU peak memory) of the sd-turbo family at the real SD-Turbo size.

Random weights of the real architecture (the configs the pack ships in
uir_lora/backbones/configs/sd_turbo/), a random [1, 77, 1024] prompt conditioning (the text encoder
does not run per image), random rank-8 LoRAs on the default targets (UNet + VAE decoder). Measures
``restore_step`` (VAE encode + UNet + VAE decode) with 0, 1 and 3 active LoRAs, unfused and fused;
for fused, the merge (entering ``composed``) is timed apart from the steps.

GPU:  python benchmarks/sd_turbo_speed.py --device cuda --dtype bf16 --size 512 --warmup 3 --repeat 20
CPU:  nice -n 10 python benchmarks/sd_turbo_speed.py --device cpu --dtype fp32 --size 512 --warmup 0 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CASES = (("base", 0, True), ("1 LoRA unfused", 1, False), ("1 LoRA fused", 1, True),
         ("3 LoRAs unfused", 3, False), ("3 LoRAs fused", 3, True))


def build_backbone(seed: int):
    """The real-size UNet and VAE, randomly initialised from the shipped configs."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from uir_lora.backbones.sd_turbo import CONFIG_DIR, SDTurboBackbone, sd_turbo_fingerprint

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(CONFIG_DIR / "unet"))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(CONFIG_DIR / "vae"))
    embeds = torch.randn(1, 77, unet.config.cross_attention_dim)
    scheduler = json.loads((CONFIG_DIR / "scheduler" / "scheduler_config.json").read_text())
    backbone = SDTurboBackbone(unet, vae, embeds, scheduler)
    backbone._fingerprint = sd_turbo_fingerprint(unet, vae, embeds)
    return backbone


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_case(backbone, bank, names: list[str], fused: bool, image: torch.Tensor, warmup: int, repeat: int) -> dict:
    from uir_lora.compose.composer import Composition, composed

    device = backbone.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    weights = {name: 1.0 / max(1, len(names)) for name in names}
    _sync(device)
    start = time.perf_counter()
    with torch.inference_mode(), composed(backbone, Composition(bank, weights, fused=fused)):
        _sync(device)
        merge_s = time.perf_counter() - start
        for _ in range(warmup):
            backbone.restore_step(image, {})
        _sync(device)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            backbone.restore_step(image, {})
            _sync(device)
            times.append(time.perf_counter() - t0)
    result = {"median_ms": round(1000 * sorted(times)[len(times) // 2], 1), "min_ms": round(1000 * min(times), 1),
              "repeat": repeat, "merge_ms": round(1000 * merge_s, 1) if names and fused else None}
    if device.type == "cuda":
        result["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=DTYPES, default="bf16" if torch.cuda.is_available() else "fp32")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--cases", default=",".join(c[0] for c in CASES), help="comma-separated subset of cases")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    from uir_lora.bank.store import open_bank
    from uir_lora.lab.testing.banks import make_random_bank

    t0 = time.perf_counter()
    backbone = build_backbone(0)
    print(f"models built in {time.perf_counter() - t0:.0f} s", flush=True)
    tmp = tempfile.TemporaryDirectory()  # kept until exit: the bank's files
    bank = open_bank(make_random_bank(Path(tmp.name), backbone, ("a", "b", "c"), rank=args.rank, bank_name="bench"))
    bank.attach(backbone)  # inject once, as the nodes keep banks attached
    setup_s = time.perf_counter() - t0
    print(f"LoRAs made and attached, setup {setup_s:.0f} s", flush=True)
    backbone.to(args.device, DTYPES[args.dtype])
    image = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)).to(args.device)
    wanted = args.cases.split(",")
    results = {}
    for label, count, fused in CASES:
        if label in wanted:
            results[label] = time_case(backbone, bank, ["a", "b", "c"][:count], fused, image, args.warmup,
                                       args.repeat)
            print(label, results[label], flush=True)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    report = {"device": device_name, "dtype": args.dtype, "size": args.size, "rank": args.rank,
              "threads": torch.get_num_threads(), "torch": torch.__version__, "setup_s": round(setup_s, 1),
              "cases": results}
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
