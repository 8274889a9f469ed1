"""Training the degradation-aware encoder (router/trained.py) on the project's synthesis.

Every example is a native-resolution crop of a photo or render at a random scale (photos of many
sizes), left clean or degraded by one kind or a mixture of 2-3 compatible kinds, each with its own
severity, by ``uir_lora.degrade`` or ``uir_lora.lab.degrade_alt`` (two implementations, so the encoder
learns the damage rather than one synthesis; rain, snow and raindrops also by ``uir_lora.lab.precipitation``,
motion and defocus blur also by ``uir_lora.lab.camera_blur``, when asked). Targets: presence per kind plus
"clean" (sigmoid, binary cross-entropy) and severity per present kind (regression). Runs through
``accelerate``: ``python -m uir_lora.lab encoder train`` on a CPU, the same under ``accelerate launch`` on GPUs.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ...degrade import KINDS, canonical_kinds
from ...degrade._common import convolve
from ...degrade.blur import shake_trajectory_kernel
from ...degrade.wide import SHORTEST_SHAKE, camera_finish
from ...errors import InputError
from ...images import IMAGE_SUFFIXES
from ...router.trained import (
    BASE,
    CLEAN,
    DegradationNet,
    build_base,
    file_sha256,
    lda_statistics,
    load_encoder,
    save_encoder,
)
from ..camera_blur import KINDS as CAMERA_KINDS
from ..camera_blur import camera_sharp, degrade_camera_blur
from ..precipitation import KINDS as PRECIPITATION_KINDS
from ..precipitation import degrade_precipitation
from ..train.trainer import TrainConfig, next_lr, optimise
from .presence import draw_kinds

IMPLEMENTATIONS = ("degrade", "degrade_alt")
WIDE_KINDS = ("motion_blur", "defocus_blur", "low_light", "haze")
"""Kinds that ``wide_share`` may draw from the wide profile's models. Its noise and JPEG are left out: their mild
ends (noise from 3/255, JPEG up to quality 95) are what the camera finish leaves on a clean photo."""
LDA_EXAMPLES_PER_CLASS = 24
SHORT_SHAKE = (SHORTEST_SHAKE, 5.0)
"""The lengths in px of ``short_shake_share``'s shakes, spaced geometrically as exposure times are."""


@dataclass
class EncoderTrainConfig(TrainConfig):
    crop: int = 160
    batch: int = 24
    lr: float = 5e-4
    lr_min: float = 1e-5
    weight_decay: float = 1e-4
    clean_share: float = 0.25
    mixture_share: float = 0.3
    severity_weight: float = 1.0
    workers: int = 1
    photo_dirs: list[str] = field(default_factory=list)
    """Extra folders of clean photographs (e.g. the scene pool's TRAIN split), used at several scales."""
    init: str = ""
    """An encoder file to continue from (its kinds must be the ones trained); empty: the ImageNet base."""
    wide_share: float = 0.0
    """Share of the standard synthesis's WIDE_KINDS drawn from its wide profile (the field's kernels, camera tone
    curves, coloured and uneven haze), without its finish (``finish_share`` decides that)."""
    finish_share: float = 0.0
    """Share of the examples, clean or damaged, that then pass the wide synthesis's camera finish (faint sensor
    noise, mild JPEG; itself applied to 70 % of them) with their labels unchanged: every real photo carries it,
    and an encoder that never saw it reads a blurred photo's faint noise as the noise kind."""
    precipitation_share: float = 0.0
    """Share of the rain, snow and raindrops drawn from the third synthesis of them (``lab.precipitation``:
    scene-lit streaks in depth layers, refracting drops with dark rims) instead of the example's implementation:
    the two others both draw bright streaks and white flakes."""
    camera_share: float = 0.0
    """Share of the motion and defocus blur drawn from the third synthesis of them (``lab.camera_blur``: blurred in
    linear light, with a shake trajectory, the sensor's noise and the camera's sharpening after it), and the same
    share of the clean examples through that camera in focus (its noise and sharpening alone are no blur)."""
    short_shake_share: float = 0.0
    """Share of the motion blur examples drawn as a short exposure's faint shake (a trajectory of ``SHORT_SHAKE``
    px, labelled at the kind's lowest severity): the standard syntheses start at about 4 px, and at the wide
    profile's share a shorter one is a few in a hundred motion examples, too few to tell it from a soft photo."""
    freeze_trunk: bool = False
    """Train the neck and heads only, the trunk and its batch-norm statistics as ``init`` has them: how d reads the
    trunk's pooled statistics is refitted, without the trunk's backward pass and with the trunk's features kept."""
    anchor_weight: float = 0.0
    """With ``freeze_trunk``: the share of each presence target taken from ``init``'s own presence on that example, so
    a refit moves the presences only as far as the labels ask and keeps, elsewhere, the calibration the router's
    policies were chosen on."""
    anchor_free: list[str] = field(default_factory=list)
    """With ``anchor_weight``: the kinds (or ``clean``) whose presence follows the labels alone, as in a free refit:
    the refit learns what they read and keeps what every other kind reads (a distillation of ``init`` beside the
    labels of the kinds it is meant to change)."""


def _rescaled(image: Image.Image, short_side: int) -> np.ndarray:
    factor = min(image.size) / short_side
    if factor <= 1:
        return np.asarray(image)
    size = (round(image.width / factor), round(image.height / factor))
    return np.asarray(image.resize(size, Image.BOX))


def photo_views(photo_dirs: Sequence[str | Path], crop: int, seed: int, renders: bool = True,
                interiors: bool = True) -> tuple[list[list[np.ndarray]], dict]:
    """Clean pictures in two groups (template renders; photographs) as uint8 HxWx3 arrays.

    Photographs come at two random scales each (short side 1.5x the crop to 1080 px and never above
    half their own, so camera noise and JPEG artefacts of the source average out): the encoder sees
    damage at the native pixel scale of photos of many sizes."""
    from ..train.data import media_images, split_photos

    rng = np.random.default_rng(seed)
    rendered = [np.asarray(image) for _, image in media_images(min_side=crop)] if renders else []
    paths = list(split_photos()[0]) if interiors else []
    for folder in photo_dirs:
        files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}); give a folder of clean photos")
        paths += files
    photos = []
    for path in paths:
        with Image.open(path) as image:
            image = image.convert("RGB")
            top = min(1080, min(image.size) // 2)
            low = min(top, round(1.5 * crop))
            for _ in range(2):
                photos.append(_rescaled(image, int(rng.integers(low, top + 1))))
    groups = [group for group in (rendered, photos) if group]
    if not groups:
        raise InputError("no training pictures: install the [train] extra or give --photos DIR")
    info = {"renders": len(rendered), "photos": len(paths), "photo_views": len(photos),
            "photo_dirs": [str(d) for d in photo_dirs]}
    return groups, info


def used_implementations(config: EncoderTrainConfig) -> list[str]:
    """The syntheses that drew the examples, as the encoder file records them."""
    return [*IMPLEMENTATIONS, *(["precipitation"] if config.precipitation_share else []),
            *(["camera_blur"] if config.camera_share else [])]


def asked(share: float, gen: torch.Generator) -> bool:
    """True with probability ``share``; the generator is drawn only for a share above 0, so a run without an
    option draws the same examples as a run from before the option existed."""
    return bool(share) and float(torch.rand((), generator=gen)) < share


def _degrader(implementation: str) -> Callable[..., torch.Tensor]:
    if implementation == "degrade_alt":
        from ..degrade_alt import degrade
    else:
        from ...degrade import degrade
    return degrade


class DamageDataset(Dataset):
    """Item i (seeded by (seed, i)): image [3,c,c], presence target [kinds + 1], severity [kinds], mask [kinds]."""

    def __init__(self, groups: list[list[np.ndarray]], config: EncoderTrainConfig, length: int,
                 kinds: Sequence[str] = KINDS) -> None:
        self.groups, self.config, self.length, self.kinds = groups, config, length, list(kinds)

    def __len__(self) -> int:
        return self.length

    def _crop(self, gen: torch.Generator) -> tuple[torch.Tensor, int]:
        group = self.groups[int(torch.randint(0, len(self.groups), (), generator=gen))]
        array = group[int(torch.randint(0, len(group), (), generator=gen))]
        height, width = array.shape[:2]
        size = self.config.crop
        if min(height, width) < size:  # a small render: up to the crop, once
            image = torch.from_numpy(array).permute(2, 0, 1).float()[None] / 255
            scale = size / min(height, width)
            image = F.interpolate(image, scale_factor=scale, mode="bilinear", antialias=False)[0]
        else:
            top = int(torch.randint(0, height - size + 1, (), generator=gen))
            left = int(torch.randint(0, width - size + 1, (), generator=gen))
            image = torch.from_numpy(np.ascontiguousarray(array[top:top + size, left:left + size]))
            image = image.permute(2, 0, 1).float() / 255
        image = image[:, :size, :size]
        image = torch.rot90(image, int(torch.randint(0, 4, (), generator=gen)), (1, 2))
        return image.contiguous(), min(height, width)

    def draw_kinds(self, gen: torch.Generator) -> list[str]:
        return draw_kinds(self.config, gen, self.kinds)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + index)
        image, frame_side = self._crop(gen)
        kinds = self.draw_kinds(gen)
        implementation = IMPLEMENTATIONS[int(torch.randint(0, 2, (), generator=gen))]
        degrade = _degrader(implementation)
        presence = torch.zeros(len(self.kinds) + 1)
        severity, mask = torch.zeros(len(self.kinds)), torch.zeros(len(self.kinds))
        x = image[None]
        for kind in canonical_kinds(kinds) if kinds else []:
            level = float(torch.rand((), generator=gen))
            options = {"frame_side": max(frame_side, self.config.crop)} if implementation == "degrade" else {}
            if implementation == "degrade" and kind in WIDE_KINDS and asked(self.config.wide_share, gen):
                options.update(profile="wide", finish=False)
            if kind == "motion_blur" and asked(self.config.short_shake_share, gen):
                x, level = short_shake(x, gen), 0.0
            elif kind in PRECIPITATION_KINDS and asked(self.config.precipitation_share, gen):
                x = degrade_precipitation(x, kind, gen, severities=[level])
            elif kind in CAMERA_KINDS and asked(self.config.camera_share, gen):
                x = degrade_camera_blur(x, kind, gen, severities=[level])
            else:
                x = degrade(x, kind, generator=gen, severity=level, **options).clamp(0, 1)
            row = self.kinds.index(kind)
            presence[row], severity[row], mask[row] = 1.0, level, 1.0
        if not kinds and asked(self.config.camera_share, gen):
            x = camera_sharp(x, gen)
        if asked(self.config.finish_share, gen):
            x = camera_finish(x, gen).clamp(0, 1)
        if not kinds:
            presence[-1] = 1.0  # "clean": no damage at all
        return x[0].float(), presence, severity, mask


def short_shake(image: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """[1,3,H,W] shaken along a trajectory of ``SHORT_SHAKE`` px (log-uniform), as a steady hand's short exposure."""
    low, high = (math.log(side) for side in SHORT_SHAKE)
    length = math.exp(low + (high - low) * float(torch.rand((), generator=gen)))
    return convolve(image, shake_trajectory_kernel(length, gen)).clamp(0, 1)


def damage_loss(presence_logits: torch.Tensor, severity_logits: torch.Tensor, presence: torch.Tensor,
                severity: torch.Tensor, mask: torch.Tensor, severity_weight: float) -> torch.Tensor:
    """BCE on presence (every kind and clean) + squared severity error on the kinds present."""
    bce = F.binary_cross_entropy_with_logits(presence_logits.float(), presence)
    error = (torch.sigmoid(severity_logits.float()) - severity) ** 2 * mask
    return bce + severity_weight * error.sum() / mask.sum().clamp_min(1.0)


def collect_lda(net: DegradationNet, dataset: DamageDataset, per_class: int, device: torch.device) -> dict:
    """LDA statistics of d on fresh single-kind and clean examples (``bank add``'s closed form)."""
    features, labels = [], []
    net.eval()
    classes = [*dataset.kinds, CLEAN]
    with torch.no_grad():
        for label, name in enumerate(classes):
            gen = torch.Generator().manual_seed(10_000 + label)
            images = []
            for _ in range(per_class):
                image, frame_side = dataset._crop(gen)
                if name != CLEAN:
                    implementation = IMPLEMENTATIONS[int(torch.randint(0, 2, (), generator=gen))]
                    options = {"frame_side": max(frame_side, dataset.config.crop)} \
                        if implementation == "degrade" else {}
                    image = _degrader(implementation)(image[None], name, generator=gen, **options)[0].clamp(0, 1)
                images.append(image.float())
            features.append(net.feature(torch.stack(images).to(device)).float().cpu())
            labels.append(torch.full((per_class,), label))
    return lda_statistics(torch.cat(features), torch.cat(labels))


def initial_net(config: EncoderTrainConfig, kinds: Sequence[str]) -> DegradationNet:
    """The ImageNet base with fresh heads, or the encoder of ``config.init`` to train further."""
    if not config.init:
        return DegradationNet(kinds, build_base())
    net, _ = load_encoder(Path(config.init))
    if net.kinds != list(kinds):
        raise InputError(f"--init {config.init} has the kinds {net.kinds}, not the {list(kinds)} being trained; "
                         f"start from the ImageNet base (no --init) or train those kinds")
    return net.train().requires_grad_(True)


def train_encoder(config: EncoderTrainConfig, out: Path, log: Callable[[str], None] = print,
                  groups: list[list[np.ndarray]] | None = None, kinds: Sequence[str] = KINDS) -> dict:
    """Fine-tune the encoder end to end; write ``out`` (safetensors) and ``out``.json (the record).

    ``groups``: clean pictures as ``photo_views`` gives them (None: build them from the training data);
    ``kinds``: the kinds it learns (every kind of the synthesis by default)."""
    from accelerate import Accelerator

    if config.freeze_trunk and not config.init:
        raise InputError("--freeze-trunk refits the neck and heads of a trained encoder: give --init FILE")
    if config.anchor_weight and not config.freeze_trunk:
        raise InputError("--anchor-weight keeps the presences of --init on its own trunk: give --freeze-trunk")
    columns = [*kinds, CLEAN]  # the presence head's outputs, in order
    if config.anchor_free and not config.anchor_weight:
        raise InputError("--anchor-free names the kinds left out of the anchor: give --anchor-weight too")
    if unknown := sorted(set(config.anchor_free) - set(columns)):
        raise InputError(f"--anchor-free names {', '.join(unknown)}, not among the kinds trained: choose from "
                         f"{', '.join(columns)}")
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    say = log if accelerator.is_main_process else (lambda *_: None)
    torch.manual_seed(config.seed)
    if groups is None:
        with accelerator.main_process_first():
            groups, data_info = photo_views(config.photo_dirs, config.crop, config.seed)
    else:
        data_info = {"pictures": sum(len(group) for group in groups), "given": True}
    say(f"training pictures: {data_info}")
    length = (config.steps or 1_000_000) * config.batch * accelerator.num_processes
    dataset = DamageDataset(groups, config, length, kinds)
    net = initial_net(config, kinds)
    if accelerator.device.type == "cpu":
        net = net.to(memory_format=torch.channels_last)
    if config.freeze_trunk:
        for part in (net.stem, net.blocks):
            part.requires_grad_(False)
    anchor, held = None, {}
    if config.anchor_weight:  # the init's own neck and presence head, as loaded, before any step
        anchor = nn.Sequential(copy.deepcopy(net.neck), copy.deepcopy(net.presence))
        anchor = anchor.requires_grad_(False).eval().to(accelerator.device)
        anchor_share = torch.tensor([0.0 if column in config.anchor_free else config.anchor_weight
                                     for column in columns], device=accelerator.device)
        # the pooled statistics the neck reads, caught on the model's own pass (the trunk is the init's)
        net.neck.register_forward_hook(lambda module, inputs, output: held.__setitem__("pooled", inputs[0]))
    trained = [parameter for parameter in net.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=config.lr, weight_decay=config.weight_decay)
    loader = DataLoader(dataset, batch_size=config.batch, drop_last=True, num_workers=config.workers,
                        persistent_workers=config.workers > 0)
    model, optimizer, loader = accelerator.prepare(net, optimizer, loader)
    model.train()
    if config.freeze_trunk:  # the trunk's batch norms keep the statistics its features were trained with
        accelerator.unwrap_model(model).stem.eval()
        accelerator.unwrap_model(model).blocks.eval()
    losses: list[float] = []
    start, step = time.perf_counter(), 0
    for images, presence, severity, mask in loader:
        lr = next_lr(step, start, config, accelerator, optimizer)
        if lr is None:
            break
        if step == 0:  # the loader's start-up (worker processes, shared memory) is the usual stall on a new machine
            say(f"first batch after {time.perf_counter() - start:.1f} s")
        images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(accelerator.device.type, dtype=torch.bfloat16, enabled=config.bf16):
            presence_logits, severity_logits = model(images)
        if anchor is not None:
            with torch.no_grad():
                presence = torch.lerp(presence, torch.sigmoid(anchor(held["pooled"].float())), anchor_share)
        loss = damage_loss(presence_logits, severity_logits, presence, severity, mask, config.severity_weight)
        step = optimise(loss, optimizer, accelerator, losses, step, lr, start, config, say)
    seconds = round(time.perf_counter() - start, 1)
    net = accelerator.unwrap_model(model).float().to(memory_format=torch.contiguous_format)
    record = {"steps": step, "seconds": seconds, "images": step * config.batch * accelerator.num_processes,
              "final_loss": round(sum(losses[-50:]) / max(1, len(losses[-50:])), 4), "base": BASE,
              "data": data_info, "implementations": used_implementations(config),
              "config": {k: v for k, v in asdict(config).items() if k not in ("loss", "extra")},  # LoRA-only fields
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if config.init:
        record["init_sha256"] = file_sha256(Path(config.init))
    if accelerator.is_main_process:
        say("collecting the within-class statistics of d for `bank add`")
        lda = collect_lda(net, dataset, LDA_EXAMPLES_PER_CLASS, accelerator.device)
        _write_encoder(net.cpu(), out, lda, record)
        say(f"wrote {out} ({Path(out).stat().st_size / 1e6:.2f} MB) after {step} steps in {seconds:.0f} s")
    return record


def average_encoders(first: Path, second: Path, weight: float, out: Path, photo_dirs: Sequence[str | Path] = (),
                     groups: list[list[np.ndarray]] | None = None, crop: int = 224, seed: int = 0) -> dict:
    """``(1 - weight) * first + weight * second``, parameter by parameter (a "model soup": two encoders of one
    lineage, e.g. one trained on from the other, averaged), with the LDA statistics of ``bank add`` collected
    anew for the average; writes ``out`` and ``out``.json. ``groups``: pictures as ``photo_views`` gives them
    (None: the training data, with ``photo_dirs``)."""
    if not 0 <= weight <= 1:
        raise InputError(f"the weight of the second encoder must be in [0, 1], got {weight}")
    net, _ = load_encoder(Path(first))
    other, _ = load_encoder(Path(second))
    if net.kinds != other.kinds:
        raise InputError(f"{first} and {second} have different kinds ({net.kinds} against {other.kinds}): only "
                         f"encoders of the same kinds average")
    theirs = other.state_dict()
    net.load_state_dict({key: torch.lerp(value, theirs[key], weight) if value.is_floating_point() else value
                         for key, value in net.state_dict().items()})
    config = EncoderTrainConfig(crop=crop, seed=seed, photo_dirs=[str(d) for d in photo_dirs])
    if groups is None:
        groups, _ = photo_views(config.photo_dirs, config.crop, config.seed)
    lda = collect_lda(net, DamageDataset(groups, config, 1, net.kinds), LDA_EXAMPLES_PER_CLASS, torch.device("cpu"))
    record = {"average": {"first_sha256": file_sha256(Path(first)), "second_sha256": file_sha256(Path(second)),
                          "weight_of_second": weight},
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    return _write_encoder(net, out, lda, record)


def _write_encoder(net: DegradationNet, out: Path, lda: dict, record: dict) -> dict:
    """The encoder file with its record (and the record's sha256) inside, and the record beside it as ``out``.json."""
    record["sha256"] = save_encoder(net, out, lda, {"record": json.dumps(record)})
    Path(f"{out}.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return record
