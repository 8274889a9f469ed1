"""Images per second of ``uir-lora restore`` over a folder, per device / dtype / tile batch (docs/command_line.md).

    python benchmarks/cli_throughput.py                                  # CPU: float32 and bfloat16
    python benchmarks/cli_throughput.py --device cuda --dtypes float32 bfloat16 float16 --tile-batches 1 4 8

The whole command runs in this process (reading, routing, composing, restoring, writing PNGs), once
untimed (loading the backbone and the router's encoder), then ``--repeats`` times; each row gives the
median wall time and the median CPU time of this process (all its threads), so that a CPU shared with
other jobs still gives a usable number: images per CPU-second. Photos: scikit-image's astronaut,
chelsea and coffee, cut to the size asked, with Gaussian noise (sigma 25/255).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from uir_lora.images import save_image
from uir_lora.lab.cli import main as cli_main


def write_photos(folder: Path, count: int, side: int) -> None:
    from skimage import data, transform

    sources = [data.astronaut(), data.chelsea(), data.coffee()]
    generator = torch.Generator().manual_seed(0)
    for index in range(count):
        photo = transform.resize(sources[index % len(sources)], (side, side), anti_aliasing=True)
        image = torch.from_numpy(photo).permute(2, 0, 1)[None].float()
        noisy = (image + torch.randn(image.shape, generator=generator) * 25 / 255).clamp(0, 1)
        save_image(noisy, folder / f"photo_{index:02d}.png")


def measure(folder: Path, out: Path, options: list[str], repeats: int, sync) -> dict:
    command = ["restore", str(folder), "-o", str(out), "--overwrite", *options]

    def once() -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        if cli_main(command) != 0:
            raise SystemExit(f"uir-lora {' '.join(command)} failed")
        sync()
        return time.perf_counter() - wall, time.process_time() - cpu

    once()  # loads the backbone and the router's encoder
    walls, cpus = zip(*(once() for _ in range(repeats)))
    return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus),
            "wall_spread_s": [min(walls), max(walls)]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--tile-batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--sizes", nargs="+", type=int, default=[512, 1024])
    parser.add_argument("--count", type=int, default=6, help="photos per folder")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for side in args.sizes:
            folder = Path(tmp) / f"in_{side}"
            write_photos(folder, args.count, side)
            # one tile (512 px) at 512²: the tile batch only matters for the larger photos
            batches = args.tile_batches if side > 512 else args.tile_batches[:1]
            for dtype in args.dtypes:
                for batch in batches:
                    options = ["--device", args.device, "--dtype", dtype, "--tile-batch", str(batch)]
                    result = measure(folder, Path(tmp) / "out", options, args.repeats, sync)
                    row = {"side": side, "dtype": dtype, "tile_batch": batch, "images": args.count, **result,
                           "images_per_s": round(args.count / result["wall_s"], 3),
                           "images_per_cpu_s": round(args.count / result["cpu_s"], 3)}
                    rows.append(row)
                    print(f"{side}² {dtype:8s} tile batch {batch}: {row['images_per_s']:.2f} img/s wall, "
                          f"{row['images_per_cpu_s']:.2f} img per CPU-s", flush=True)
    record = {"device": args.device, "threads": args.threads, "torch": torch.__version__,
              "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "load_average": os.getloadavg(), "command": " ".join(["python", *sys.argv]), "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
