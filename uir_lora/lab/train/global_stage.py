"""Training one kind's global adapter (uir_lora/global_stage) on whole-photo crops.

The adapter maps a thumbnail to a tone curve and a smooth gain/offset field, so its loss is taken on
the images shrunk to ``loss_side``: the transform is smooth, and shrinking averages the noise away,
which keeps every step cheap (thousands of steps in minutes on a CPU). Each batch mixes

- the kind itself, drawn by either training synthesis (``degrade``'s wide profile or ``degrade_alt``);
- the kind in a mixture with another compatible kind (the target is still the clean photo);
- identity examples: clean photos and other kinds' damage, target = the input, so a misrouted weight
  on this kind leaves the image alone.

CPU:  python -m uir_lora.lab.train.global_stage --kind low_light --photos data/train_photos --minutes 5 --out F
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from ...degrade import KINDS, compatible
from ...errors import InputError, UIRError
from ...global_stage import GlobalAdapter, GlobalParams, apply_global, thumbnail
from ...global_stage.adapter import coefficients_at_omega, transmission_coefficients
from .joint import _load_photos, degrade_case, global_stage_provenance, photo_crops
from .trainer import CLEAN


@dataclass
class GlobalConfig:
    kind: str
    minutes: float = 5.0
    steps: int = 0
    """0: run for ``minutes``; else exactly this many steps."""
    batch: int = 16
    crop: int = 256
    loss_side: int = 128
    lr: float = 2e-3
    mixture_share: float = 0.25
    identity_share: float = 0.25
    dark_scenes: float = 0.0
    """Share of photos first darkened (0.5-3 stops in linear light) and then taken as the clean target: night
    scenes and dim rooms are photos too, and the adapter must not brighten every dark photo to mid-grey."""
    dehaze: bool = False
    """Give the adapter the scattering model (haze cues, omega and airlight heads): for haze."""
    anchor: bool = False
    """Give the adapter the exposure anchor (its highlights lifted to ANCHOR_LEVEL before the curves): for low light."""
    omega_target: bool = False
    """Teach the dehazing head each example's best omega directly (``best_omega``, a search) beside the image loss:
    through the image alone the head learns a nearly constant omega, where the best one varies widely from photo to
    photo. Needs ``dehaze``."""
    omega_cap: float = 0.0
    """The adapter's cap on omega (0: MAX_OMEGA); stored in its file."""
    init: str = ""
    """An adapter file to train on from (a bank's ``KIND.global.safetensors``), instead of a fresh adapter; its file
    says what it is (dehazing, anchor, cap), and ``dehaze``, ``anchor`` and ``omega_cap`` must agree with it."""
    seed: int = 0
    threads: int = 0


def draw_batch(photos: Sequence[np.ndarray], cfg: GlobalConfig, rng: random.Random, np_rng: np.random.Generator,
               gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(damaged, target) at ``crop`` px: the kind, its mixtures, and identity examples."""
    clean = photo_crops(photos, cfg.batch, cfg.crop, np_rng)
    if cfg.dark_scenes:
        stops = torch.tensor([rng.uniform(0.5, 3.0) if rng.random() < cfg.dark_scenes else 0.0
                              for _ in range(cfg.batch)]).view(-1, 1, 1, 1)
        clean = (clean.pow(2.2) * 2.0 ** -stops).pow(1 / 2.2)
    partners = [k for k in KINDS if k != cfg.kind and compatible([cfg.kind, k])]
    others = [k for k in KINDS if k != cfg.kind]
    damaged, targets = [], []
    for image in clean.split(1):
        roll = rng.random()
        if roll < cfg.identity_share:
            case = (CLEAN,) if rng.random() < 0.3 else (rng.choice(others),)
            out = degrade_case(image, case, gen)
            damaged.append(out)
            targets.append(out)
            continue
        case = (cfg.kind, rng.choice(partners)) if roll < cfg.identity_share + cfg.mixture_share else (cfg.kind,)
        damaged.append(degrade_case(image, case, gen))
        targets.append(image)
    return torch.cat(damaged), torch.cat(targets)


OMEGA_STEPS = 21
"""Omegas searched per example, evenly from 0 to the adapter's cap."""


def best_omega(small: torch.Tensor, target: torch.Tensor, params: GlobalParams, cap: float) -> torch.Tensor:
    """[B,1]: for each example the omega on an even grid up to ``cap`` whose output (the rest of ``params`` kept) is
    nearest ``target`` in L1. A search, not a gradient: the loss is far from convex in omega (1/t)."""
    grid = torch.linspace(0.0, cap, OMEGA_STEPS)
    with torch.no_grad():
        frozen = GlobalParams(**{field.name: None if getattr(params, field.name) is None
                                 else getattr(params, field.name).detach() for field in fields(params)})
        unit = transmission_coefficients(small, replace(frozen, omega=torch.ones_like(frozen.omega)))
        errors = []
        for omega in grid:
            at = torch.full_like(frozen.omega, float(omega))
            out = apply_global(small, replace(frozen, omega=at), coefficients=coefficients_at_omega(unit, at))
            errors.append((out - target).abs().mean(dim=(1, 2, 3)))
        errors = torch.stack(errors, dim=1)
    return grid[errors.argmin(dim=1)][:, None]


def initial_adapter(cfg: GlobalConfig) -> GlobalAdapter:
    """A fresh adapter of the config's kind, or the file ``cfg.init`` made trainable again."""
    if not cfg.init:
        return GlobalAdapter(dehaze=cfg.dehaze, anchor=cfg.anchor, omega_cap=cfg.omega_cap or None)
    from ...bank.store import read_global_adapter

    adapter = read_global_adapter(Path(cfg.init))
    cap = float(adapter.omega_limit)
    # the file keeps its cap in float16 (0.98 reads back as 0.97998), so the same cap given again must compare equal
    other_cap = bool(cfg.omega_cap) and abs(cfg.omega_cap - cap) > 1e-3
    if (adapter.dehaze, adapter.anchor) != (cfg.dehaze, cfg.anchor) or other_cap:
        raise InputError(f"{cfg.init} is an adapter with dehaze={adapter.dehaze}, anchor={adapter.anchor}, omega cap "
                         f"{cap:g}; give the same --dehaze / --anchor (and no other --omega-cap) to train on from it")
    return adapter.train().requires_grad_(True)


def train_global(photos: Sequence[np.ndarray], cfg: GlobalConfig, log=print,
                 start: GlobalAdapter | None = None) -> tuple[GlobalAdapter, list[dict]]:
    """Train ``start`` (default: ``initial_adapter(cfg)``) on ``photos``; the adapter and the loss per step."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng, np_rng = random.Random(cfg.seed), np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    adapter = start if start is not None else initial_adapter(cfg)
    cap = float(adapter.omega_limit)
    optimiser = torch.optim.AdamW(adapter.parameters(), lr=cfg.lr, weight_decay=1e-4)
    started, history, step = time.monotonic(), [], 0
    budget = cfg.minutes * 60
    while (step < cfg.steps) if cfg.steps else (time.monotonic() - started < budget):
        progress = step / cfg.steps if cfg.steps else (time.monotonic() - started) / budget
        for group in optimiser.param_groups:  # cosine to a tenth
            group["lr"] = cfg.lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(1.0, progress))))
        damaged, target = draw_batch(photos, cfg, rng, np_rng, gen)
        small = F.adaptive_avg_pool2d(damaged, cfg.loss_side)
        params = adapter(thumbnail(damaged))
        small_target = F.adaptive_avg_pool2d(target, cfg.loss_side)
        loss = F.l1_loss(apply_global(small, params, clamp=False), small_target)
        if cfg.omega_target and params.omega is not None:
            loss = loss + F.l1_loss(params.omega, best_omega(small, small_target, params, cap))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(adapter.parameters(), 1.0)
        optimiser.step()
        step += 1
        history.append({"step": step, "loss": float(loss.detach()), "seconds": round(time.monotonic() - started, 1)})
        if step % 25 == 0:
            recent = np.mean([h["loss"] for h in history[-25:]])
            log(f"{cfg.kind} step {step} loss {recent:.4f} ({time.monotonic() - started:.0f} s)")
    return adapter.eval(), history


def save_adapter(adapter: GlobalAdapter, path: Path, metadata: dict[str, str]) -> None:
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in adapter.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=metadata)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m uir_lora.lab.train.global_stage",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--kind", required=True, choices=KINDS)
    parser.add_argument("--photos", type=Path, nargs="+", required=True, help="folders of clean training photos")
    parser.add_argument("--out", type=Path, required=True, help="the adapter's .safetensors file")
    for name, default in asdict(GlobalConfig(kind="noise")).items():
        if isinstance(default, bool):
            parser.add_argument(f"--{name.replace('_', '-')}", action="store_true")
        elif name != "kind":
            parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    args = parser.parse_args(argv)
    cfg = GlobalConfig(**{k: v for k, v in vars(args).items() if k in GlobalConfig.__dataclass_fields__})
    if (cfg.omega_target or cfg.omega_cap) and not cfg.dehaze:
        parser.error("--omega-target and --omega-cap apply to a dehazing adapter: add --dehaze")
    try:  # a fresh adapter is made after the seed is set, in train_global
        start = initial_adapter(cfg) if cfg.init else None
    except UIRError as exc:  # a missing file, or one that is not what the options say: a message, not a traceback
        parser.error(str(exc))
    adapter, history = train_global(_load_photos(args.photos, 1024), cfg, start=start)
    config = asdict(cfg)
    if cfg.init:  # a continuation carries how the file it started from was trained: the bank's provenance reads both
        config["init_from"] = global_stage_provenance(Path(cfg.init))
    save_adapter(adapter, args.out, {"kind": cfg.kind, "config": json.dumps(config)})
    args.out.with_suffix(".log.json").write_text(json.dumps({"config": config, "history": history}))
    print(f"wrote {args.out} after {len(history)} steps")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
