"""Training a whole bank with the composition rule in the loop.

Each LoRA is still one kind's adapter on the frozen backbone, but the bank learns on single kinds
*and* on mixtures, restored the way inference composes them: every kind present gets its LoRA at
weight 1 (``x_out = f0(x) + sum_i f_i(x)``), so a mixture is not restored by half-strength LoRAs.
A batch holds one case (one kind, a compatible pair, or a clean photo for the clean LoRA) on
photo-sized images, degraded by the wide profile of ``uir_lora.degrade`` or by the independent
``uir_lora.lab.degrade_alt`` (rain, snow and raindrops also by ``uir_lora.lab.precipitation``, motion and defocus
blur also by ``uir_lora.lab.camera_blur``, when asked), and
optionally run coarse-to-fine (``sampler.multiscale``).

A new kind joins such a bank as it joins any bank: its LoRA trains alone (on its own kind and on mixtures
with the frozen others), and nothing else changes.

GPU:  accelerate launch -m uir_lora.lab.train.joint --out runs/bank --init lora_bank/embedded-ffdnet --minutes 8
CPU:  python -m uir_lora.lab.train.joint --out runs/bank --steps 2 --crop 64 --batch 2   (a smoke run)
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig
from PIL import Image

from ...backbones.base import Backbone
from ...bank.manifest import MIN_COARSEST_SIDE, LoraEntry, Manifest
from ...compose.composer import blend_conditioning, restore_order
from ...degrade import KINDS, canonical_kinds, compatible, degrade
from ...global_stage import GlobalAdapter, run_adapters
from ...sampler.multiscale import multiscale, pyramid_levels
from ..camera_blur import KINDS as CAMERA_KINDS
from ..camera_blur import degrade_camera_blur
from ..degrade_alt import degrade as degrade_alt
from ..precipitation import KINDS as PRECIPITATION_KINDS
from ..precipitation import degrade_precipitation
from .trainer import CLEAN, LOSSES, TrainConfig, conditioning_of, next_lr, optimise

IMPLEMENTATIONS = ("wide", "alt")
"""The two independent syntheses that feed training: degrade's wide profile and degrade_alt."""
SOLO_SYNTHESES = ("wide-alt", "standard")
THIRD_SYNTHESES = ((PRECIPITATION_KINDS, degrade_precipitation), (CAMERA_KINDS, degrade_camera_blur))
"""(kinds, synthesis) of the third syntheses, in the order of their shares (``degrade_case``)."""


@dataclass
class JointConfig(TrainConfig):
    minutes: float = 8.0
    crop: int = 256
    lr: float = 5e-4
    bf16: bool = False
    """bf16 autocast: a LoRA trained under it learns to correct bf16's rounding of FFDNet instead of the damage,
    and then hurts in float32 inference (docs/training.md), so float32 unless asked."""
    log_every: int = 25
    rank: int = 16
    mixture_share: float = 0.4
    """Share of batches that hold two kinds at once."""
    clean_share: float = 0.08
    """Share of batches of undamaged photos (the clean LoRA's identity target)."""
    multiscale_coarsest: int = 0
    """0: run flat; else coarse-to-fine down to this many pixels on the shorter side."""
    kinds: tuple[str, ...] = KINDS
    identity_share: float = 0.15
    """With ``train_kinds``: share of batches where a trained kind's LoRA meets a clean photo or another kind's
    damage and must leave it alone (a misrouted weight then costs little)."""
    train_kinds: tuple[str, ...] = ()
    """Only these LoRAs learn (the others are frozen at their ``init``); every batch holds one of these kinds,
    alone or beside another kind of ``kinds``. Empty: every LoRA learns, the clean one included."""
    solo_synthesis: str = "wide-alt"
    """How a batch of one kind is damaged: "wide-alt" (either training implementation, as mixtures are) or
    "standard" (the single-kind trainer's synthesis, ``degrade``'s standard profile), so a LoRA retrained in
    composition keeps what it learned alone."""
    precipitation_share: float = 0.0
    """Share of the images whose rain, snow or raindrops come from the third synthesis (``lab.precipitation``,
    other physical models than the two implementations); the case's other kinds by the wide profile."""
    camera_share: float = 0.0
    """Share of the images whose motion or defocus blur comes from the third synthesis of blur
    (``lab.camera_blur``: blurred in linear light, then the sensor's noise and the camera's sharpening)."""
    frame_side: int = 0
    """0: each crop is damaged as a whole photo of its own size. Else each batch is damaged on frames of this
    side and a ``crop`` window of each is trained on, so damage sized to the photo (drops, flakes, a haze's
    depth) appears as on a photo of that side; the three syntheses draw on the whole image they are given. A case
    that starts with the global stage has it on the whole frame, as the sampler runs it on the whole photo; a case
    with a kind restored before the stage runs both on the window (a first pass on the frame would cost the
    frame's pixels in gradients)."""


def all_pairs(kinds: Sequence[str]) -> list[tuple[str, str]]:
    """Every compatible pair of kinds (two noises, two blurs... are alternatives, not mixtures)."""
    return [(a, b) for i, a in enumerate(kinds) for b in kinds[i + 1:] if compatible([a, b])]


def draw_case(rng: random.Random, cfg: JointConfig) -> tuple[str, ...]:
    """One batch's kinds: ("clean",), one kind, or a compatible pair."""
    roll = rng.random()
    if cfg.train_kinds:
        kind = rng.choice(cfg.train_kinds)
        partners = [k for k in cfg.kinds if k != kind and compatible([kind, k])]
        return (kind, rng.choice(partners)) if roll < cfg.mixture_share and partners else (kind,)
    if roll < cfg.clean_share:
        return (CLEAN,)
    if roll < cfg.clean_share + cfg.mixture_share:
        return rng.choice(all_pairs(cfg.kinds))
    return (rng.choice(cfg.kinds),)


def photo_crops(photos: Sequence[np.ndarray], count: int, side: int, rng: np.random.Generator) -> torch.Tensor:
    """``count`` random ``side`` px crops, each from a random photo at a random scale, as float [N,3,s,s].

    Photos smaller than ``side`` are passed over: enlarged, they would teach a blurred photo as the clean one."""
    eligible = [photo for photo in photos if min(photo.shape[:2]) >= side]
    if not eligible:
        raise ValueError(f"no photo is at least {side} px on its shorter side; give larger photos or a smaller "
                         "--crop / --frame-side")
    crops = []
    for _ in range(count):
        photo = eligible[int(rng.integers(len(eligible)))]
        height, width = photo.shape[:2]
        scale = float(rng.uniform(side / min(height, width), 1.0)) if min(height, width) > side else 1.0
        if scale < 1.0:
            image = Image.fromarray(photo).resize((max(side, round(width * scale)), max(side, round(height * scale))),
                                                  Image.LANCZOS)
            photo_scaled = np.asarray(image)
        else:
            photo_scaled = photo
        top = int(rng.integers(photo_scaled.shape[0] - side + 1))
        left = int(rng.integers(photo_scaled.shape[1] - side + 1))
        # A copy: a resized photo's array is PIL's read-only buffer, which torch warns about sharing.
        crop = torch.from_numpy(np.array(photo_scaled[top:top + side, left:left + side]))
        crop = crop.permute(2, 0, 1).float().div(255.0)
        crop = torch.rot90(crop, int(rng.integers(4)), (1, 2))
        crops.append(crop.flip(-1) if rng.random() < 0.5 else crop)
    return torch.stack(crops)


def same_window(images: Sequence[torch.Tensor], side: int, rng: np.random.Generator) -> list[torch.Tensor]:
    """One random ``side`` px window per image of a batch, the same in every tensor of ``images`` (damaged and
    target frames must stay aligned)."""
    height, width = images[0].shape[-2:]
    tops = rng.integers(height - side + 1, size=images[0].shape[0])
    lefts = rng.integers(width - side + 1, size=images[0].shape[0])
    return [torch.stack([image[i, :, top:top + side, left:left + side] for i, (top, left) in
                         enumerate(zip(tops.tolist(), lefts.tolist()))]) for image in images]


def degrade_case(clean: torch.Tensor, case: Sequence[str], gen: torch.Generator,
                 solo_synthesis: str = "wide-alt", precipitation_share: float = 0.0,
                 camera_share: float = 0.0) -> torch.Tensor:
    """Each image by one of the two implementations, chosen per image; one kind by the standard synthesis when
    ``solo_synthesis`` is "standard"; rain, snow and raindrops by their third synthesis on ``precipitation_share``
    of the images, motion and defocus blur by theirs (``lab.camera_blur``) on ``camera_share``."""
    if solo_synthesis not in SOLO_SYNTHESES:
        raise ValueError(f"solo_synthesis must be one of {SOLO_SYNTHESES}, got {solo_synthesis!r}")
    if tuple(case) == (CLEAN,):
        # Undamaged photos still carry a camera's faint noise and compression sometimes.
        return degrade(clean, [], generator=gen, profile="wide")
    # which images each third synthesis draws (a draw only for a share above 0: earlier runs' streams stay)
    drawn = [(torch.rand((clean.shape[0],), generator=gen) < share, model)
             for share, model in zip((precipitation_share, camera_share), THIRD_SYNTHESES)
             if share > 0 and set(case) & set(model[0])]
    chosen = torch.stack([mask for mask, _ in drawn]).any(dim=0) if drawn else None
    if chosen is not None and bool(chosen.any()):
        out = clean.clone()
        if not bool(chosen.all()):
            out[~chosen] = degrade_case(clean[~chosen], case, gen, solo_synthesis)
        signatures = torch.stack([mask for mask, _ in drawn], dim=1)
        for signature in torch.unique(signatures[chosen], dim=0):
            images = (signatures == signature).all(dim=1) & chosen
            models = {kind: synthesis for taken, (_, (kinds, synthesis)) in zip(signature.tolist(), drawn) if taken
                      for kind in kinds}
            out[images] = with_third_synthesis(clean[images], case, gen, models)
        return out
    if len(case) == 1 and solo_synthesis == "standard":
        return degrade(clean, list(case), generator=gen)
    out = []
    for image in clean.split(1):
        use_alt = bool(torch.rand((1,), generator=gen) < 0.5)
        out.append(degrade_alt(image, list(case), generator=gen) if use_alt
                   else degrade(image, list(case), generator=gen, profile="wide"))
    return torch.cat(out)


def with_third_synthesis(clean: torch.Tensor, case: Sequence[str], gen: torch.Generator,
                         models: Mapping[str, Callable[[torch.Tensor, str, torch.Generator], torch.Tensor]]
                         ) -> torch.Tensor:
    """``case`` in physical order, each kind of ``models`` by that third synthesis, the others by the wide profile;
    the camera's finish once, at the end."""
    out = clean
    for name in canonical_kinds(list(case)):
        out = (models[name](out, name, gen) if name in models
               else degrade(out, [name], generator=gen, profile="wide", finish=False))
    return degrade(out, [], generator=gen, profile="wide")


def activate(backbone: Backbone, names: Sequence[str]) -> None:
    """Make ``names`` the active adapters at weight 1 everywhere (peft sums active adapters' outputs)."""
    for layer in backbone.lora_layers():
        layer.enable_adapters(True)
        present = [n for n in names if n in layer.lora_A]
        layer.set_adapter(present)
        for name in present:
            layer.set_scale(name, 1.0)


def blended_conditioning(backbone: Backbone, conditioning: Mapping[str, Mapping[str, float]],
                         names: Sequence[str], images: torch.Tensor | None = None,
                         measured: Mapping[str, Sequence[str]] | None = None) -> dict[str, float | torch.Tensor]:
    """The composition's rule (``blend_conditioning``) for the active LoRAs at weight 1; a LoRA's ``measured``
    values read from each of ``images`` as the sampler reads them (one value per image)."""
    return blend_conditioning(backbone, [
        (1.0, conditioning_of(backbone, images, conditioning[name], (measured or {}).get(name, ())))
        for name in names])


def restore(backbone: Backbone, image: torch.Tensor, cond: Mapping[str, float], coarsest: int) -> torch.Tensor:
    levels = pyramid_levels(*image.shape[-2:], coarsest) if coarsest else 0
    return multiscale(lambda x: backbone.restore_step(x, cond), image, levels)


def copy_router_files(manifest: Manifest, source: Path, target: Path) -> None:
    """The files ``manifest``'s router reads (the trained encoder, the kept examples), copied from the bank in
    ``source`` so the bank written in ``target`` routes as the one it started from."""
    for name in (manifest.encoder.file, manifest.router.examples):
        if name:
            shutil.copyfile(source / name, target / name)


def through_global_stage(images: torch.Tensor, case: Sequence[str],
                         adapters: Mapping[str, GlobalAdapter] | None) -> torch.Tensor:
    """The frozen global stage the sampler runs before the backbone, every kind of ``case`` at weight 1."""
    with torch.no_grad():
        return run_adapters(images, [(1.0, adapters[k]) for k in case if adapters and k in adapters])


def case_order(names: Sequence[str], global_stage: Mapping[str, GlobalAdapter] | None,
               restored_before: Mapping[str, Sequence[str]] | None = None
               ) -> tuple[list[str], tuple[list[str], list[str]] | None]:
    """(the kinds of ``names`` with a global stage, ``restore_order``'s passes for them): how the sampler runs them."""
    staged = [name for name in names if global_stage and name in global_stage]
    return staged, restore_order(names, staged, lambda name: (restored_before or {}).get(name, ()))


def stage_runs_first(case: Sequence[str], global_stage: Mapping[str, GlobalAdapter] | None,
                     restored_before: Mapping[str, Sequence[str]] | None = None) -> bool:
    """Whether ``case`` starts with the global stage (a kind of it has an adapter and none is restored before it),
    which can then run apart from the passes after it (``case_output``)."""
    staged, order = case_order(case, global_stage, restored_before)
    return bool(staged) and order is None


def case_output(backbone: Backbone, images: torch.Tensor, names: Sequence[str],
                conditioning: Mapping[str, Mapping[str, float]], coarsest: int,
                global_stage: Mapping[str, GlobalAdapter] | None = None,
                restored_before: Mapping[str, Sequence[str]] | None = None,
                on_activate: Callable[[], None] | None = None,
                measured: Mapping[str, Sequence[str]] | None = None) -> torch.Tensor:
    """``names`` at weight 1 on ``images`` as the sampler runs them: the global stage, then one pass; or, for a case
    holding a kind restored before another's global stage (``restore_order``), that kind's pass, the global stage
    on its output (gradients flow through it to that LoRA; the adapters stay frozen), then the local kinds left.
    ``on_activate``: called after each activation (the trainer re-enables its parameters' gradients); ``measured``:
    each LoRA's conditioning values read from the pass's input (``LoraEntry.measured``)."""
    def one_pass(kinds: Sequence[str], x: torch.Tensor) -> torch.Tensor:
        activate(backbone, kinds)
        if on_activate:
            on_activate()
        return restore(backbone, x, blended_conditioning(backbone, conditioning, kinds, x, measured), coarsest)

    staged, order = case_order(names, global_stage, restored_before)
    # the frozen adapters run on the CPU in float32, as the sampler runs them, whatever autocast the passes use
    if order is None:
        with torch.autocast("cpu", enabled=False):
            corrected = through_global_stage(images.float().cpu(), names, global_stage).to(images.device)
        return one_pass(names, corrected.contiguous(memory_format=torch.channels_last))
    first, after = order
    restored = one_pass(first, images).float().clamp(0, 1)
    with torch.autocast("cpu", enabled=False):
        corrected = run_adapters(restored.cpu(), [(1.0, global_stage[name]) for name in staged]).to(images.device)
    return one_pass(after, corrected.contiguous(memory_format=torch.channels_last)) if after else corrected


def train_bank(backbone: Backbone, photos: Sequence[np.ndarray], cfg: JointConfig,
               conditioning: Mapping[str, Mapping[str, float]], init: Mapping[str, dict] | None = None,
               accelerator=None, log=print, global_stage: Mapping[str, GlobalAdapter] | None = None,
               restored_before: Mapping[str, Sequence[str]] | None = None,
               measured: Mapping[str, Sequence[str]] | None = None) -> dict:
    """Train one LoRA per kind of ``cfg.kinds`` plus the clean LoRA, jointly, with composition in the loop.

    ``global_stage``: frozen global adapters by kind; a batch passes through those of its kinds first, as the
    sampler runs them, so the LoRAs learn what is left after the global stage. ``restored_before``: the bank's
    order ({kind: the global kinds its LoRA precedes}); a case it orders runs as the sampler runs it
    (``case_output``)."""
    from accelerate import Accelerator

    accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    names = [*cfg.kinds, CLEAN]
    for name in names:
        backbone.inject_adapter(name, LoraConfig(r=cfg.rank, lora_alpha=float(cfg.rank),
                                                 target_modules=list(backbone.default_lora_targets)))
        if init and name in init:
            backbone.load_adapter_state(name, dict(init[name]))
    backbone.to(accelerator.device)
    learning = set(cfg.train_kinds or names)
    params = [p for n, p in backbone.adapter_root.named_parameters()
              if "lora_" in n and n.rsplit(".", 2)[-2] in learning]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr)
    rng = random.Random(cfg.seed + accelerator.process_index)
    np_rng = np.random.default_rng(cfg.seed + accelerator.process_index)
    gen = torch.Generator().manual_seed(cfg.seed + accelerator.process_index)
    start, step, losses = time.perf_counter(), 0, []

    def trainable() -> None:  # set_adapter froze the inactive adapters; the optimiser keeps them all
        for p in params:
            p.requires_grad_(True)

    while (lr := next_lr(step, start, cfg, accelerator, optimizer)) is not None:
        case = draw_case(rng, cfg)
        clean = photo_crops(photos, cfg.batch, max(cfg.crop, cfg.frame_side), np_rng)
        if cfg.train_kinds and rng.random() < cfg.identity_share:
            # an identity example: this kind's LoRA (and global adapter) on a clean photo or another kind's damage
            case = case[:1]
            other = rng.choice([CLEAN, *(k for k in cfg.kinds if k != case[0])])
            damaged = degrade_case(clean, (other,), gen)
            target = damaged
        else:
            damaged = degrade_case(clean, case, gen, cfg.solo_synthesis, cfg.precipitation_share,
                                   cfg.camera_share)
            target = damaged if case == (CLEAN,) else clean
        stage = global_stage
        if cfg.frame_side > cfg.crop:
            if stage_runs_first(case, global_stage, restored_before):
                # the sampler runs the global stage on the whole photo: here on the whole frame, then the window
                damaged, stage = through_global_stage(damaged.float(), case, global_stage), None
            damaged, target = same_window([damaged, target], cfg.crop, np_rng)
        x = damaged.to(accelerator.device).contiguous(memory_format=torch.channels_last)
        with torch.autocast(accelerator.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            out = case_output(backbone, x, case, conditioning, cfg.multiscale_coarsest, stage,
                              restored_before, trainable, measured)
        loss = LOSSES[cfg.loss](out.float(), target.to(accelerator.device))
        step = optimise(loss, optimizer, accelerator, losses, step, lr, start, cfg, log)
    for p in params:
        p.requires_grad_(False)
    return {"steps": step, "seconds": round(time.perf_counter() - start, 1), "loss_last": losses[-50:]}


def evaluate(backbone: Backbone, images: torch.Tensor, conditioning: Mapping[str, Mapping[str, float]],
             cases: Sequence[tuple[str, ...]], coarsest: int, severity: float = 0.6,
             global_stage: Mapping[str, GlobalAdapter] | None = None,
             restored_before: Mapping[str, Sequence[str]] | None = None,
             measured: Mapping[str, Sequence[str]] | None = None) -> dict[str, dict]:
    """PSNR per case (mean over images, as validation scores it): input, each present LoRA alone at weight 1,
    and all present LoRAs composed at 1, in the bank's order (``case_output``)."""
    from .validate import scores

    def psnr(output: torch.Tensor, target: torch.Tensor) -> float | None:
        return scores(output.float().clamp(0, 1), target)[0]

    results = {}
    for case in cases:
        gen = torch.Generator().manual_seed(20_000)
        damaged = torch.cat([degrade_alt(x, list(case), generator=gen, severity=severity) for x in images.split(1)])
        row = {"input": psnr(damaged, images)}
        with torch.inference_mode():
            for names in [(n,) for n in case] + ([tuple(case)] if len(case) > 1 else []):
                out = torch.cat([case_output(backbone, x.to(backbone.device), names, conditioning, coarsest,
                                             global_stage, restored_before, measured=measured).cpu()
                                 for x in damaged.split(1)])
                row["+".join(names)] = psnr(out, images)
        results["+".join(case)] = row
    return results


def _load_photos(folders: Sequence[Path], max_side: int) -> list[np.ndarray]:
    photos = []
    for folder in folders:
        for path in sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png",
                                                                                        ".webp")):
            image = Image.open(path).convert("RGB")
            if max(image.size) > max_side:
                factor = max(image.size) / max_side
                image = image.resize((round(image.width / factor), round(image.height / factor)), Image.LANCZOS)
            photos.append(np.asarray(image))
    return photos


def training_photos(extra_folders: Sequence[Path] = (), max_side: int = 1024) -> list[np.ndarray]:
    """The training sources of offline-assets.md: template renders, training interiors, the Debian
    TRAIN scenes when tools/build_scene_pool.py has fetched them, and extra folders."""
    from ...errors import InputError
    from ..scenes import load_scenes
    from .data import _downscale, media_images, split_photos

    photos = [np.asarray(image) for _, image in media_images()]
    train, _ = split_photos()
    for index, path in enumerate(train):
        image = _downscale(Image.open(path).convert("RGB"), 2.0 + (index % 3) * 0.5)  # JPEG artefacts vanish
        photos.append(np.asarray(image))
    try:
        photos += [array for _, array in load_scenes("TRAIN")]
    except InputError as exc:  # the pool is optional: training runs without it, and says so
        print(f"training without the Debian scenes: {exc}")
    return photos + _load_photos(extra_folders, max_side)


def recorded_coarsest_side(name: str, cfg: JointConfig, old: LoraEntry | None) -> int:
    """The ``coarsest_side`` the bank records for ``name``: a LoRA trained here runs at inference as it was trained
    (through the pyramid of ``cfg.multiscale_coarsest``, or flat); a frozen one keeps its ``--init`` entry's."""
    if not cfg.train_kinds or name in cfg.train_kinds:
        return cfg.multiscale_coarsest
    return old.coarsest_side if old is not None else 0


def global_stage_provenance(path: Path) -> dict:
    """How a global adapter was trained: the config its trainer wrote into the file's metadata."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata() or {}
    return {"recipe": "python -m uir_lora.lab.train.global_stage", **json.loads(metadata.get("config", "{}"))}


def load_global_stage(folder: Path) -> dict[str, GlobalAdapter]:
    """{kind: frozen adapter} from ``folder``/KIND.safetensors."""
    from ...bank.store import read_global_adapter

    adapters = {kind: read_global_adapter(folder / f"{kind}.safetensors") for kind in KINDS
                if (folder / f"{kind}.safetensors").is_file()}
    if not adapters:
        raise SystemExit(f"no global adapters (KIND.safetensors) in {folder}")
    return adapters


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m uir_lora.lab.train.joint", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="new bank folder")
    parser.add_argument("--init", type=Path, help="a bank to start from (its LoRAs, conditioning and router)")
    parser.add_argument("--photos", type=Path, nargs="*", default=[], help="folders of clean training photos "
                        "(default: the training packages; tools/pack_training_photos.py writes them as files)")
    parser.add_argument("--data-dir", type=Path, help="where data/validation.pt is cached (default <repo>/data)")
    parser.add_argument("--steps", type=int, default=0)
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--frame-side", type=int, default=0,
                        help="damage each batch on frames of this side and train on a --crop window of each "
                             "(0: damage the crop itself); sizes drops, flakes and haze as on a photo that large")
    parser.add_argument("--multiscale", type=int, default=0, help="coarsest pyramid side (0: flat)")
    parser.add_argument("--mixture-share", type=float, default=JointConfig.mixture_share,
                        help="share of batches that hold two kinds at once (default %(default)s)")
    parser.add_argument("--solo-synthesis", choices=SOLO_SYNTHESES, default=JointConfig.solo_synthesis,
                        help="how a batch of one kind is damaged: as mixtures are (wide-alt) or by the single-kind "
                        "trainer's standard synthesis, so a LoRA retrained in composition keeps what it learned alone")
    parser.add_argument("--precipitation-share", type=float, default=JointConfig.precipitation_share,
                        help="share of the images whose rain, snow or raindrops come from the third synthesis "
                        "(uir_lora.lab.precipitation; default %(default)s)")
    parser.add_argument("--camera-share", type=float, default=JointConfig.camera_share,
                        help="share of the images whose motion or defocus blur comes from the third synthesis of "
                        "blur, through a camera's pipeline (uir_lora.lab.camera_blur; default %(default)s)")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=False,
                        help="bf16 autocast (faster where the CPU has bfloat16 instructions; float32 by default): an "
                        "FFDNet LoRA trained under it learns bf16's rounding, then hurts in float32")
    parser.add_argument("--loss", choices=tuple(LOSSES), default=JointConfig.loss,
                        help="l1 (default) or mse, whose conditional mean keeps partial corrections where the damage "
                        "is hard to see (raindrops)")
    parser.add_argument("--eval-images", type=int, default=9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--global-stage", type=Path, help="a folder of trained global adapters, KIND.safetensors "
                        "(python -m uir_lora.lab.train.global_stage); they join the bank, frozen")
    parser.add_argument("--train-kinds", nargs="+", choices=KINDS, default=[],
                        help="train only these LoRAs; the others keep --init's")
    parser.add_argument("--from-scratch", action="store_true",
                        help="the --train-kinds LoRAs start at zero instead of --init's (a kind whose task changed)")
    parser.add_argument("--sigma", nargs="+", default=[], metavar="KIND=LEVEL",
                        help="FFDNet noise level (in /255 units) a kind's LoRA is trained and run with")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from safetensors.torch import load_file

    from ...backbones.registry import FAMILIES
    from ...bank.manifest import placeholder_embedding, read_manifest, write_manifest
    from ...bank.writer import add_lora, create_bank
    from .data import DEFAULT_DATA_DIR, load_validation_images

    parser = build_parser()
    args = parser.parse_args(argv)
    for flag, share in (("--mixture-share", args.mixture_share), ("--precipitation-share", args.precipitation_share),
                        ("--camera-share", args.camera_share)):
        if not 0 <= share <= 1:
            parser.error(f"{flag} must be a share in [0, 1], got {share}")
    if args.frame_side and args.frame_side < args.crop:
        parser.error(f"--frame-side {args.frame_side} is smaller than --crop {args.crop}: give 0 or at least the crop")
    if args.multiscale != 0 and args.multiscale < MIN_COARSEST_SIDE:
        parser.error(f"--multiscale {args.multiscale}: give 0 (flat) or a coarsest side of at least "
                     f"{MIN_COARSEST_SIDE} px, which the bank records for the sampler (LoraEntry.coarsest_side)")
    if (args.out / "manifest.json").exists():
        parser.error(f"{args.out} already holds a bank; choose a new folder")
    backbone = FAMILIES["embedded-ffdnet"](None)
    init_manifest = read_manifest(args.init) if args.init else None
    init = ({e.name: load_file(str(args.init / e.file)) for e in init_manifest.loras} if init_manifest else None)
    conditioning = {name: dict(init_manifest.lora(name).conditioning) if init_manifest and name in
                    init_manifest.names else dict(backbone.default_conditioning) for name in (*KINDS, CLEAN)}
    for item in args.sigma:
        kind, _, level = item.partition("=")
        if kind not in conditioning:
            parser.error(f"--sigma {item}: {kind!r} is not a kind")
        conditioning[kind]["sigma"] = float(level) / 255
    if init and args.from_scratch:
        init = {name: state for name, state in init.items() if name not in args.train_kinds}
    cfg = JointConfig(steps=args.steps, minutes=args.minutes, batch=args.batch, crop=args.crop, lr=args.lr,
                      multiscale_coarsest=args.multiscale, bf16=args.bf16, seed=args.seed,
                      train_kinds=tuple(args.train_kinds), mixture_share=args.mixture_share,
                      solo_synthesis=args.solo_synthesis, precipitation_share=args.precipitation_share,
                      camera_share=args.camera_share,
                      loss=args.loss, frame_side=args.frame_side)
    if cfg.train_kinds and not init:
        parser.error("--train-kinds keeps the other LoRAs as they are: give the bank they come from with --init")
    global_stage = load_global_stage(args.global_stage) if args.global_stage else {}
    photos = _load_photos(args.photos, 1024) if args.photos else training_photos()
    if not photos:
        parser.error(f"no photos in {[str(p) for p in args.photos]}")
    # the init bank's order: a retrained bank keeps it, and its mixtures train as the sampler runs them
    order = {e.name: list(e.restored_before) for e in init_manifest.loras if e.restored_before} if init_manifest else {}
    # a LoRA told each photo's own level keeps it: trained and scored as the sampler runs it
    measured = {e.name: list(e.measured) for e in init_manifest.loras if e.measured} if init_manifest else {}
    stats = train_bank(backbone, photos, cfg, conditioning, init, global_stage=global_stage, restored_before=order,
                       measured=measured)
    images = load_validation_images(args.data_dir or DEFAULT_DATA_DIR)[: args.eval_images]
    cases = [(k,) for k in KINDS] + [("noise", "jpeg"), ("low_light", "noise"), ("haze", "noise"),
                                      ("motion_blur", "jpeg"), ("rain", "haze")]
    backbone.to("cpu")
    results = evaluate(backbone, images, conditioning, cases, args.multiscale, global_stage=global_stage,
                       restored_before=order, measured=measured)
    encoder = init_manifest.encoder if init_manifest else None
    if encoder is None:
        from ...bank.manifest import EncoderSpec
        from ...router.encoder import DegradationEncoder

        dim = DegradationEncoder().dim
        encoder = EncoderSpec(dim=dim, feature_mean=[0.0] * dim, feature_std=[1.0] * dim)
    manifest = create_bank(args.out, args.out.name, backbone.family, backbone.fingerprint, encoder,
                           description="LoRAs trained jointly with composition in the loop (uir_lora.lab.train.joint)")
    if init_manifest is not None:  # the router's settings come with the embeddings they were fitted with
        manifest.router = init_manifest.router
        write_manifest(manifest, args.out)
        copy_router_files(init_manifest, args.init, args.out)
    provenance = {"recipe": "joint", "steps": stats["steps"], "seconds": stats["seconds"], "batch": cfg.batch,
                  "crop": cfg.crop, "frame_side": cfg.frame_side, "multiscale_coarsest": cfg.multiscale_coarsest,
                  "photos": len(photos),  # those at least a frame's side large are the ones trained on
                  "photos_used": sum(min(p.shape[:2]) >= max(cfg.crop, cfg.frame_side) for p in photos),
                  "implementations": [*IMPLEMENTATIONS, *(["precipitation"] if cfg.precipitation_share else []),
                                      *(["camera_blur"] if cfg.camera_share else [])],
                  "solo_synthesis": cfg.solo_synthesis, "precipitation_share": cfg.precipitation_share,
                  "camera_share": cfg.camera_share,
                  "init": str(args.init) if args.init else None,
                  "command": " ".join(["python -m uir_lora.lab.train.joint", *(argv or sys.argv[1:])])}
    for name in (*KINDS, CLEAN):
        old = init_manifest.lora(name) if init_manifest and name in init_manifest.names else None
        entry = LoraEntry(name=name, file=f"{name}.safetensors", rank=cfg.rank, alpha=float(cfg.rank),
                          target_modules=list(backbone.default_lora_targets),
                          embedding=list(old.embedding) if old else placeholder_embedding(encoder, manifest.router),
                          embedding_of=old.embedding_of if old else "d",
                          description=old.description if old else name, conditioning=conditioning[name],
                          provenance=provenance, restored_before=list(order.get(name, [])),
                          measured=list(measured.get(name, [])), coarsest_side=recorded_coarsest_side(name, cfg, old))
        if name in global_stage:
            entry.global_stage = f"{name}.global.safetensors"
            source = args.global_stage / f"{name}.safetensors"
            shutil.copyfile(source, args.out / entry.global_stage)
            entry.provenance = {**provenance, "global_stage": global_stage_provenance(source)}
        add_lora(args.out, entry, backbone.adapter_state(name))
    (args.out / "joint_eval.json").write_text(json.dumps({"stats": stats, "eval": results}, indent=1))
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
