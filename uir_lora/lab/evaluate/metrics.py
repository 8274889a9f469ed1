"""Full-reference image-quality metrics, all offline: PSNR, SSIM, HaarPSI and a deep-feature distance.

- PSNR and SSIM come from torchmetrics.
- HaarPSI (weight-free, correlates well with human ratings) comes from piq. ``import piq`` runs
  piq/__init__.py, which imports torchvision (not installed next to this torch), so the submodule is
  imported under a stub parent package (see shared/reference/offline-assets.md 3.2).
- The feature distance is an uncalibrated LPIPS-style distance on the router's frozen ImageNet
  EfficientNet-Lite0: it is *not* LPIPS and must never be reported as such.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from ...router import encoder as router_encoder

FEATURE_BLOCKS = (0, 2, 4, 7, 10)
"""EfficientNet-Lite0 blocks whose outputs the feature distance compares (strides 2..16)."""

METRICS: dict[str, bool] = {"psnr": True, "ssim": True, "haarpsi": True, "feature_distance": False}
"""Metric name -> True when higher is better."""


def _piq_function(module: str, name: str) -> Callable:
    """Import ``piq.<module>.<name>`` without running piq/__init__.py (which needs torchvision)."""
    if "piq" not in sys.modules or not hasattr(sys.modules["piq"], "__path__"):
        spec = importlib.util.find_spec("piq")
        if spec is None or spec.origin is None:
            raise ImportError("the HaarPSI metric needs: pip install --no-deps piq==0.8.0")
        stub = types.ModuleType("piq")
        stub.__path__ = [os.path.dirname(spec.origin)]
        sys.modules["piq"] = stub
    return getattr(importlib.import_module(f"piq.{module}"), name)


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if pred.shape != target.shape or pred.ndim != 4 or pred.shape[1] != 3:
        raise ValueError(f"metrics need two [B,3,H,W] images of one shape, got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    return pred.float().clamp(0, 1), target.float().clamp(0, 1)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB over the whole batch (0..1 range)."""
    pred, target = _check_pair(pred, target)
    return float(peak_signal_noise_ratio(pred, target, data_range=1.0))


def ssim(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Structural similarity (Gaussian window 11, sigma 1.5), mean over the batch."""
    pred, target = _check_pair(pred, target)
    return float(structural_similarity_index_measure(pred, target, data_range=1.0))


def haarpsi(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Haar wavelet-based perceptual similarity (piq, weight-free); 1 = identical."""
    pred, target = _check_pair(pred, target)
    return float(_piq_function("haarpsi", "haarpsi")(pred, target, data_range=1.0))


@torch.inference_mode()
def _block_features(images: torch.Tensor) -> list[torch.Tensor]:
    """Outputs of FEATURE_BLOCKS for [B,3,H,W] in 0..1, on the router's cached encoder net."""
    net = router_encoder.efficientnet_lite0()
    wanted, last = set(FEATURE_BLOCKS), max(FEATURE_BLOCKS)
    x = (images - 0.5) / 0.5  # TF-style normalisation of these weights
    outputs = []
    with router_encoder.NET_LOCK:  # the router shares this net
        x = net._swish(net._bn0(net._conv_stem(x)))
        for index, block in enumerate(net._blocks[: last + 1]):
            x = block(x)
            if index in wanted:
                outputs.append(x)
    return outputs


def feature_distance(pred: torch.Tensor, target: torch.Tensor) -> float:
    """LPIPS-style distance on frozen EfficientNet-Lite0 features (uncalibrated; 0 = identical).

    Each block's features are unit-normalised along channels; squared differences are averaged over
    space, summed over channels, then averaged over blocks with equal weights.
    """
    pred, target = _check_pair(pred, target)
    both = _block_features(torch.cat((pred, target)))
    total = 0.0
    for features in both:
        a, b = F.normalize(features, dim=1).chunk(2)
        total += float((a - b).pow(2).sum(dim=1).mean())
    return total / len(both)


METRIC_FUNCTIONS: dict[str, Callable[[torch.Tensor, torch.Tensor], float]] = {
    "psnr": psnr, "ssim": ssim, "haarpsi": haarpsi, "feature_distance": feature_distance,
}


def measure(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Every metric of METRICS for one restored image against its clean target."""
    return {name: METRIC_FUNCTIONS[name](pred, target) for name in METRICS}
