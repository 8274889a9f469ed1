"""Training a LoRA (or the whole backbone) on synthetic pairs, generic over the ``Backbone`` interface.

Runs through ``accelerate``: plain ``python -m`` on a CPU, ``accelerate launch`` on several GPUs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from peft import LoraConfig
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ...backbones.base import Backbone, with_measured
from ...degrade import KINDS, degrade

CLEAN = "clean"  # the identity LoRA: target = input, so clean photos have a safe route
SIGMA_GRID = (0, 5, 10, 15, 25, 35, 50)  # candidate fixed FFDNet noise levels, in /255 units
MEASURED_SIGMA_CEILING = 75 / 255
"""The highest noise level a measured-sigma LoRA is told (``train-lora --measured-sigma``): above the strongest
noise of the training synthesis (50/255), where a measurement of a textured photo may read more."""
LOSSES = {"l1": F.l1_loss, "mse": F.mse_loss}


def all_kinds() -> tuple[str, ...]:
    return (*KINDS, CLEAN)


def degrade_batch(clean: torch.Tensor, kind: str | Sequence[str], generator: torch.Generator,
                  severity: float | None = None, frame_side: int | None = None) -> torch.Tensor:
    """``kind`` one name, ``"clean"`` (identity) or a list of names to draw one per image from.

    ``frame_side``: the side of the photo the images are crops of (see ``degrade``); None: whole photos.
    """
    if isinstance(kind, str):
        return clean.clone() if kind == CLEAN else degrade(clean, kind, generator=generator, severity=severity,
                                                           frame_side=frame_side)
    picks = torch.randint(0, len(kind), (clean.shape[0],), generator=generator).tolist()
    return torch.cat([degrade_batch(c, kind[p], generator, severity, frame_side)
                      for c, p in zip(clean.split(1), picks)])


class PairDataset(Dataset):
    """Item i: a random sub-crop of a cached crop, flipped/rotated, degraded; seeded by (seed, i).

    ``frame_side``: degrade each sub-crop as a window of a photo of that side (the validation frame,
    256), so size-relative degradations (raindrop, haze, snow) look as they do on whole photos.
    ``identity_fraction``: that fraction of the items (exactly, in any run of consecutive indices, so in
    every batch) are identity examples: a clean crop or one degraded by another kind (half and half),
    target = input, so the LoRA learns to leave images without its degradation alone.
    ``followed_by``: a share ``followed_share`` of the other items also take that kind after this one (in the
    synthesis's order), as a photo takes JPEG after its sensor noise; the target stays the clean crop.
    """

    def __init__(self, crops: torch.Tensor, kind: str | Sequence[str], crop: int, length: int, seed: int,
                 frame_side: int | None = None, identity_fraction: float = 0.0, followed_by: str | None = None,
                 followed_share: float = 0.0) -> None:
        if not 0.0 <= identity_fraction < 1.0:
            raise ValueError(f"identity_fraction {identity_fraction} is outside [0, 1); use e.g. 0.25")
        if identity_fraction and (not isinstance(kind, str) or kind == CLEAN):
            raise ValueError(f"identity_fraction needs one degradation kind, not {kind!r}; use 0 for it")
        if followed_by is not None and (not isinstance(kind, str) or kind in (CLEAN, followed_by)
                                        or followed_by not in KINDS or not 0.0 < followed_share <= 1.0):
            raise ValueError(f"followed_by needs one degradation kind, another built-in kind after it and a share "
                             f"in (0, 1]; got {kind!r}, {followed_by!r}, {followed_share}")
        self.followed_by, self.followed_share = followed_by, followed_share
        self.others = [k for k in KINDS if k != kind]
        self.identity_fraction = identity_fraction
        if crop > crops.shape[-1]:
            raise ValueError(f"crop {crop} is larger than the cached crops ({crops.shape[-1]}); use --crop <= "
                             f"{crops.shape[-1]}")
        if frame_side is not None and frame_side < crop:
            raise ValueError(f"frame_side {frame_side} is smaller than the crop {crop}; use --frame-side >= {crop}")
        self.crops, self.kind, self.crop, self.length, self.seed = crops, kind, crop, length, seed
        self.frame_side = frame_side

    def __len__(self) -> int:
        return self.length

    def is_identity(self, index: int) -> bool:
        """Stratified, not random: floor(i * F) steps up at exactly a fraction F of the indices."""
        f = self.identity_fraction
        return math.floor((index + 1) * f) > math.floor(index * f)

    def is_followed(self, index: int) -> bool:
        """Whether item ``index`` takes ``followed_by`` too: its own draw, so the other items are the ones a
        dataset without it gives."""
        draw = torch.Generator().manual_seed(self.seed * 1_000_003 + index + 7_777_777)
        return float(torch.rand((1,), generator=draw)) < self.followed_share

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        src = self.crops[int(torch.randint(0, len(self.crops), (1,), generator=gen))]
        top, left = torch.randint(0, src.shape[-1] - self.crop + 1, (2,), generator=gen).tolist()
        clean = src[:, top:top + self.crop, left:left + self.crop].float().div(255.0)
        clean = torch.rot90(clean, int(torch.randint(0, 4, (1,), generator=gen)), (1, 2))
        if torch.rand((1,), generator=gen) < 0.5:
            clean = clean.flip(-1)
        identity = bool(self.identity_fraction) and self.is_identity(index)
        kind = self.kind
        if identity:
            other = self.others[int(torch.randint(0, len(self.others), (1,), generator=gen))]
            kind = CLEAN if torch.rand((1,), generator=gen) < 0.5 else other
        if not identity and self.followed_by and self.is_followed(index):
            kind = [kind, self.followed_by]  # one image with both, not one of them (degrade_batch's list)
            degraded = degrade(clean.unsqueeze(0).contiguous(), kind, generator=gen, frame_side=self.frame_side)[0]
            return degraded, clean
        degraded = degrade_batch(clean.unsqueeze(0).contiguous(), kind, gen, frame_side=self.frame_side)[0]
        return degraded, degraded.clone() if identity else clean


class RestoreModule(nn.Module):
    """nn.Module view of ``backbone.restore_step`` so accelerate (DDP) can wrap and call it. ``measured``: the
    conditioning values read from each image (``LoraEntry.measured``), the recorded ones their ceiling."""

    def __init__(self, backbone: Backbone, conditioning: Mapping[str, float], measured: Sequence[str] = ()) -> None:
        super().__init__()
        self.root = backbone.adapter_root
        self._backbone = [backbone]  # a list: Backbone is not an nn.Module, keep it out of the module tree
        self.conditioning = dict(conditioning)
        self.measured = tuple(measured)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self._backbone[0].restore_step(image, conditioning_of(self._backbone[0], image, self.conditioning,
                                                                     self.measured))


def conditioning_of(backbone: Backbone, images: torch.Tensor, conditioning: Mapping[str, float],
                    measured: Sequence[str]) -> Mapping[str, float | torch.Tensor]:
    """The conditioning a LoRA is trained and validated with: the recorded values, with its ``measured`` ones
    read from each image as the sampler reads them (one value per image)."""
    if not measured:
        return conditioning
    with torch.no_grad():
        measurement = backbone.measure_conditioning(images)
    return with_measured(conditioning, measured, measurement)


@dataclass
class TrainConfig:
    steps: int = 0            # 0: run until ``minutes`` are used (the schedule follows wall time)
    minutes: float = 7.0
    batch: int = 16
    crop: int = 64
    lr: float = 1e-3
    lr_min: float = 1e-5
    weight_decay: float = 0.0
    seed: int = 0
    bf16: bool = False  # bf16-trained FFDNet LoRAs correct bf16 rounding and hurt in float32 inference
    loss: str = "l1"    # "mse": the conditional mean, which PSNR rewards when the degradation is hard to detect
    log_every: int = 50
    extra: dict = field(default_factory=dict)

    def lr_at(self, progress: float) -> float:
        """The cosine schedule's learning rate at ``progress`` (0..1) through the run."""
        return self.lr_min + 0.5 * (self.lr - self.lr_min) * (1 + math.cos(math.pi * progress))

    def schedule(self) -> str:
        return f"AdamW {self.lr:g}, cosine to {self.lr_min:g} over the " + (
            f"{self.steps} steps" if self.steps else f"{self.minutes:g}-minute budget (wall-clock progress)")


def pick_sigma(backbone: Backbone, degraded: torch.Tensor, clean: torch.Tensor,
               grid: Sequence[int] = SIGMA_GRID) -> tuple[float, dict[int, float]]:
    """The fixed noise level (0..1 units) giving the untouched backbone its best PSNR on these pairs."""
    scores = {}
    with torch.inference_mode():
        for s in grid:
            out = backbone.restore_step(degraded, {"sigma": s / 255.0}).clamp(0, 1)
            scores[s] = float(-10 * torch.log10(F.mse_loss(out, clean, reduction="none").mean((1, 2, 3))).mean())
    best = max(scores, key=scores.get)
    return best / 255.0, scores


def _progress(step: int, start: float, cfg: TrainConfig, accelerator: Accelerator) -> float:
    if cfg.steps:
        return step / cfg.steps
    elapsed = torch.tensor((time.perf_counter() - start) / (cfg.minutes * 60.0), device=accelerator.device)
    return float(accelerator.reduce(elapsed, reduction="max"))  # all ranks agree on lr and on stopping


def next_lr(step: int, start: float, cfg: TrainConfig, accelerator: Accelerator,
            optimizer: torch.optim.Optimizer) -> float | None:
    """Set and return the cosine learning rate for ``step``; None once the steps or minutes are spent."""
    progress = _progress(step, start, cfg, accelerator)
    if progress >= 1.0:
        return None
    lr = cfg.lr_at(progress)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def optimise(loss: torch.Tensor, optimizer: torch.optim.Optimizer, accelerator: Accelerator, losses: list[float],
             step: int, lr: float, start: float, cfg: TrainConfig, log: Callable[[str], None]) -> int:
    """One optimiser step on ``loss``; every ``cfg.log_every`` steps a line with the mean loss since the last
    one. Returns the number of steps done."""
    optimizer.zero_grad(set_to_none=True)
    accelerator.backward(loss)
    optimizer.step()
    losses.append(float(loss.detach()))
    step += 1
    if step % cfg.log_every == 0:
        recent = sum(losses[-cfg.log_every:]) / cfg.log_every
        log(f"step {step} loss {recent:.4f} lr {lr:.2e} {time.perf_counter() - start:.0f}s")
    return step


def train(backbone: Backbone, dataset: Dataset, conditioning: Mapping[str, float], cfg: TrainConfig,
          params: Sequence[nn.Parameter], accelerator: Accelerator | None = None,
          log: Callable[[str], None] = print, measured: Sequence[str] = ()) -> dict:
    """Optimise ``params`` (adapter or all weights) with L1 on ``dataset``; returns stats. ``measured``: the
    conditioning values read from each training image (``RestoreModule``)."""
    accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    model = RestoreModule(backbone, conditioning, measured)
    if accelerator.device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)  # much faster bf16 convolutions on CPU
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    loader = DataLoader(dataset, batch_size=cfg.batch, shuffle=False, drop_last=True, num_workers=0)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    model.train()
    losses: list[float] = []
    start, step = time.perf_counter(), 0
    for degraded, clean in loader:
        lr = next_lr(step, start, cfg, accelerator, optimizer)
        if lr is None:
            break
        degraded = degraded.contiguous(memory_format=torch.channels_last)
        with torch.autocast(accelerator.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            loss = LOSSES[cfg.loss](model(degraded).float(), clean)
        step = optimise(loss, optimizer, accelerator, losses, step, lr, start, cfg, log)
    model.eval()
    return {"steps": step, "seconds": round(time.perf_counter() - start, 1), "losses": losses}


def train_lora(backbone: Backbone, name: str, config: LoraConfig, dataset: Dataset,
               conditioning: Mapping[str, float], cfg: TrainConfig,
               init_state: Mapping[str, torch.Tensor] | None = None, **kwargs) -> dict:
    """Inject adapter ``name`` (zero-initialised B: starts as the base model, or ``init_state``: a LoRA
    file's tensors to continue from), train only it."""
    backbone.inject_adapter(name, config)
    if init_state is not None:
        backbone.load_adapter_state(name, dict(init_state))
    for layer in backbone.lora_layers():
        layer.set_adapter(name)
    params = [p for n, p in backbone.adapter_root.named_parameters() if f".{name}." in n and "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    return train(backbone, dataset, conditioning, cfg, params, **kwargs)


def train_full(backbone: Backbone, dataset: Dataset, conditioning: Mapping[str, float], cfg: TrainConfig,
               **kwargs) -> dict:
    """Full fine-tuning baseline: every backbone weight trains (no LoRA)."""
    params = list(backbone.adapter_root.parameters())
    for p in params:
        p.requires_grad_(True)
    try:
        return train(backbone, dataset, conditioning, cfg, params, **kwargs)
    finally:
        backbone.adapter_root.requires_grad_(False)
