"""Cost of the router's encoders against one 512² pass of the backbone, on the CPU with one thread.

    python benchmarks/encoder_speed.py --encoder lora_bank/embedded-ffdnet/encoder.safetensors [--repeats 7]

Times (CPU time of this process, interleaved repeats, median; benchmarks/speed.py's method): the bare
embedded FFDNet on a 512² photo, the frozen ImageNet encoder of the shipped router (features of its
crops, with high-pass and statistics), and the trained encoder (router/trained.py) on the same
image with the same crop layout. The goal is trained / backbone <= 0.3.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]  # this checkout
from speed import interleaved, photo  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)

from uir_lora import pipeline  # noqa: E402
from uir_lora.lab.evaluate.harness import bare_restore  # noqa: E402
from uir_lora.router.encoder import DegradationEncoder  # noqa: E402
from uir_lora.router.trained import TrainedEncoder, trained_spec  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", type=Path, required=True, help="a trained encoder (.safetensors)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--out", type=Path, help="also write the result as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    image = photo((args.size, args.size))
    backbone = pipeline.default_backbone()
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "encoder.safetensors"
        target.write_bytes(args.encoder.read_bytes())
        trained = TrainedEncoder(trained_spec(target), Path(folder))
    frozen = DegradationEncoder()
    functions = {
        "backbone": lambda: bare_restore(backbone, image, {"sigma": 25 / 255}),
        "imagenet_encoder": lambda: frozen.features(image),
        "trained_encoder": lambda: trained.features(image),
    }
    times = interleaved(functions, args.repeats, lambda: None)
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "size": args.size, "threads": 1, "repeats": args.repeats, "crops": len(frozen.boxes(args.size, args.size)),
        "seconds": {name: round(value, 4) for name, value in medians.items()},
        "trained_over_backbone": round(medians["trained_encoder"] / medians["backbone"], 3),
        "imagenet_over_backbone": round(medians["imagenet_encoder"] / medians["backbone"], 3),
        "command": "python benchmarks/encoder_speed.py --encoder " + str(args.encoder),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
