"""Cost of the per-backbone lock: two threads restoring on one cached backbone vs the same two restores in a row.

    python benchmarks/concurrency.py                 # CPU, 1 torch thread, 512x512, 5 repeats
    python benchmarks/concurrency.py --device cuda   # on a GPU machine

Both threads use the shipped bank with different manual weights. The lock serialises
attach + compose + forward, so two threads can at best match the sequential time; the number to
watch is the ratio threaded / sequential (1.0 = the lock costs nothing beyond the serialisation).
Each repeat also checks that every threaded output equals its single-threaded output bit for bit.
Wall time (threads overlap), median over the repeats with the spread (min-max).
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

import torch

from uir_lora import pipeline
from uir_lora.backbones.registry import load_backbone
from uir_lora.compose.composer import Composition
from uir_lora.sampler.restore import SamplerOptions, restore_batch

WEIGHTS = ({"noise": 1.0}, {"jpeg": 0.8, "haze": 0.5})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    backbone = load_backbone("embedded-ffdnet", device=args.device)
    bank = pipeline.load_bank()
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(1, 3, args.size, args.size, generator=generator) for _ in WEIGHTS]
    options = SamplerOptions(tile=512)
    report = {"size": args.size, "repeats": args.repeats, "torch_threads": args.threads, "device": args.device}
    for fused in (True, False):
        jobs = [(image, Composition(bank=bank, weights=w, fused=fused)) for image, w in zip(images, WEIGHTS)]
        expected = [restore_batch(backbone, image, [c], options) for image, c in jobs]  # also the warm-up
        sequential, threaded = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            for image, composition in jobs:
                restore_batch(backbone, image, [composition], options)
            sequential.append(time.perf_counter() - start)
            outputs: list = [None] * len(jobs)

            def work(index: int, image: torch.Tensor, composition: Composition, outputs: list = outputs) -> None:
                outputs[index] = restore_batch(backbone, image, [composition], options)

            threads = [threading.Thread(target=work, args=(i, *job)) for i, job in enumerate(jobs)]
            start = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            threaded.append(time.perf_counter() - start)
            assert all(torch.equal(o, e) for o, e in zip(outputs, expected)), "a threaded output differs"
        ratios = [t / s for t, s in zip(threaded, sequential)]
        report["fused" if fused else "unfused"] = {
            "sequential_s": [round(statistics.median(sequential), 3), round(min(sequential), 3),
                             round(max(sequential), 3)],
            "two_threads_s": [round(statistics.median(threaded), 3), round(min(threaded), 3),
                              round(max(threaded), 3)],
            "ratio_median": round(statistics.median(ratios), 3),
            "bit_exact": True,
        }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
