"""The one code path the CLI and the ComfyUI nodes share: load, estimate, compose, restore.

This module is the runtime's public surface: the nodes and the command line's restore and estimate
import only it (and ``errors``). Inputs are validated here, once; the functions below it trust them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch

from .backbones.base import Backbone
from .backbones.placement import DEVICE_FORMS, DTYPES, resolve_device, resolve_dtype
from .backbones.registry import FAMILIES as BACKBONE_FAMILIES
from .backbones.registry import load_backbone, parse_backbone_spec
from .bank.manifest import NORMALISATIONS, RouterDefaults
from .bank.store import LoraBank, open_bank
from .compose.composer import Composition, check_weights, raise_global_weights
from .degrade import KINDS, degrade
from .errors import TEMPERATURE_RANGE, InputError, check_int, check_range, parse_number
from .images import IMAGE_SUFFIXES, PIXEL_BUDGET_ENV, LoadedImage, load_image, pixel_budget, read_image, save_image
from .paths import MAX_NAME_BYTES, PACK_ROOT, bundled_bank_root, safe_resolve
from .router.chart import weight_chart
from .router.router import Router, RoutingResult, drop_weak_followers, presence_confidence, unsure_note
from .router.spatial import DEFAULT_WINDOW, WINDOW_RANGE, RegionWeights, estimate_regions, region_map_picture
from .sampler.restore import InterruptFn, ProgressFn, SamplerOptions, as_image_batch, restore_batch
from .sampler.spatial import restore_regions

__all__ = [  # what the nodes and the command line use, besides what is defined here
    "BACKBONE_FAMILIES", "DEFAULT_WINDOW", "DEVICE_FORMS", "DTYPES", "IMAGE_SUFFIXES", "KINDS", "MAX_NAME_BYTES",
    "NORMALISATIONS", "PACK_ROOT", "PIXEL_BUDGET_ENV", "Backbone", "Composition", "InterruptFn", "LoadedImage",
    "LoraBank", "ProgressFn", "RegionWeights", "RoutingResult", "SamplerOptions", "degrade", "load_backbone",
    "load_image", "parse_backbone_spec", "pixel_budget", "read_image", "region_map_picture", "resolve_device",
    "resolve_dtype", "safe_resolve", "save_image", "weight_chart",
]

DEFAULT_BANK = "embedded-ffdnet"
BLEND_MODES = ("manual", "override", "bias")
_ROUTERS: dict[str, Router] = {}
_ROUTERS_LOCK = threading.Lock()


def bank_roots(extra: Sequence[str | Path] = ()) -> list[Path]:
    """Where bank names resolve: the given model folders, then the pack's lora_bank/."""
    return [Path(p) for p in extra] + [bundled_bank_root()]


def list_banks(extra_roots: Sequence[str | Path] = ()) -> list[str]:
    names = []
    for root in bank_roots(extra_roots):
        if root.is_dir():
            names += [p.name for p in sorted(root.iterdir()) if (p / "manifest.json").is_file()]
    return list(dict.fromkeys(names))


def banks_for_family(family: str, extra_roots: Sequence[str | Path] = ()) -> list[str]:
    """Names of the banks made for a backbone family (manifest's backbone_family); unreadable manifests are skipped,
    since opening that bank names what is wrong with it."""
    found = []
    for name in list_banks(extra_roots):
        try:
            manifest = safe_resolve(name, bank_roots(extra_roots), what="LoRA bank") / "manifest.json"
            if json.loads(manifest.read_text()).get("backbone_family") == family:
                found.append(name)
        except (OSError, ValueError, AttributeError):
            continue
    return found


def load_bank(name: str = DEFAULT_BANK, extra_roots: Sequence[str | Path] = ()) -> LoraBank:
    """Open bank ``name`` (a folder name inside a bank root; never an arbitrary path)."""
    return open_bank(safe_resolve(name, bank_roots(extra_roots), what="LoRA bank"))


def default_backbone() -> Backbone:
    """The embedded FFDNet backbone shipped in lora_bank/backbones/ (cached)."""
    return load_backbone("embedded-ffdnet")


def backbone_from_upscale_model(model: object, device: torch.device | str,
                                dtype: torch.dtype | None = None) -> Backbone:
    """A spandrel backbone around a copy of an already loaded model (ComfyUI core's UPSCALE_MODEL)."""
    from .backbones.spandrel_backbone import SpandrelBackbone  # imports spandrel, only when asked for

    # a copy: LoRAs must never end up in the model that core's Upscale Image node also uses
    return SpandrelBackbone.from_descriptor(model).to(device, dtype)


def router_for(bank: LoraBank) -> Router:
    key = bank.key  # hashes the whole manifest, embeddings included: once per call
    with _ROUTERS_LOCK:
        if key not in _ROUTERS:
            _ROUTERS[key] = Router(bank.manifest, bank_dir=bank.root)
        return _ROUTERS[key]


def estimate(
    bank: LoraBank,
    images: torch.Tensor,
    top_k: int | None = None,
    temperature: float | None = None,
    normalisation: str | None = None,
) -> list[RoutingResult]:
    """Route each image of [B,3,H,W]: similarities to every LoRA and the kept weights."""
    return router_for(bank).route(as_image_batch(images), top_k, temperature, normalisation)


def estimate_spatial(
    bank: LoraBank,
    images: torch.Tensor,
    window: int = DEFAULT_WINDOW,
    top_k: int | None = None,
    temperature: float | None = None,
) -> list[RegionWeights]:
    """Per-region routing of each image: per-window weights and smooth per-pixel weight maps."""
    return _route_regions(bank, as_image_batch(images), window, top_k, temperature)


def _route_regions(bank: LoraBank, images: torch.Tensor, window: int, top_k: int | None,
                   temperature: float | None) -> list[RegionWeights]:
    router = router_for(bank)
    return [estimate_regions(router, image[None], window, top_k, temperature) for image in images]


def parse_weights(text: str) -> dict[str, float]:
    """``"noise=0.7,jpeg=0.3"`` -> {"noise": 0.7, "jpeg": 0.3}; empty text -> {}."""
    if not isinstance(text, str):
        raise InputError(f"weights must be text like 'noise=0.7,jpeg=0.3', got {type(text).__name__} {text!r}")
    weights: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise InputError(f"weights must look like 'noise=0.7,jpeg=0.3'; could not read {item!r}")
        if name in weights:
            raise InputError(f"weights name {name!r} twice; give each LoRA one weight, like 'noise=0.7,jpeg=0.3'")
        try:
            weights[name] = float(parse_number(f"the weight of {name!r}", value))
        except InputError as exc:
            raise InputError(f"weights must look like 'noise=0.7,jpeg=0.3'; could not read {item!r}: {exc}") from None
    return weights


def check_routing_options(
    bank: LoraBank, top_k: int | None, temperature: float | None, window: int = DEFAULT_WINDOW
) -> None:
    """Refuse bad router options up front, even when the call would not use them (manual weights)."""
    if top_k is not None:
        check_int("top_k", top_k, 1, max(1, len(bank.manifest.names)))  # the router's own limit
    if temperature is not None:
        check_range("temperature", temperature, *TEMPERATURE_RANGE)
    check_int("window", window, *WINDOW_RANGE)


def compose(
    bank: LoraBank,
    routing: RoutingResult | None = None,
    manual: Mapping[str, float] | None = None,
    mode: str = "override",
    fused: bool = True,
) -> Composition:
    """Combine the router's weights with manual ones.

    ``manual``: only the manual weights (the router is not consulted); ``override``: manual weights
    replace the router's for the LoRAs they name; ``bias``: manual weights are added to the router's.
    The combined weights are checked once, when the Composition is made.
    """
    if mode not in BLEND_MODES:
        raise InputError(f"mode must be one of {BLEND_MODES}, got {mode!r}")
    manual = {name: value for name, value in (manual or {}).items() if value != 0}  # a zero weight is no weight
    routed = dict(routing.weights) if routing else {}
    notes = tuple(routing.notes) if routing and mode != "manual" else ()
    floor = bank.manifest.router.follower_floor
    if routing is not None and mode != "manual" and floor is not None and routing.normalisation == "sigmoid":
        # do no harm: the router's answer stays a presence per kind; a weak second kind is not applied
        routed, left_out = drop_weak_followers(routed, floor, bank.manifest.router.masking_kinds)
        notes += tuple(left_out)
    if routing is not None and routing.unknown and mode != "manual":
        # no LoRA fits: restore gently rather than confidently wrong (the strength is recorded in the bank)
        safe = bank.manifest.router.unknown_strength
        routed = {name: weight * safe for name, weight in routed.items()}
        notes += (f"unknown degradation ({routing.unknown_reason}): router weights scaled to {safe:g}",)
    if mode == "manual":
        routing, weights = None, dict(manual)
    elif mode == "override":
        weights = {**routed, **manual}
    else:
        weights = {name: routed.get(name, 0.0) + manual.get(name, 0.0) for name in routed.keys() | manual.keys()}
    source = "+".join(s for s, used in (("router", routing), ("manual", manual)) if used) or "none"
    confidence = routing.confidence if routing is not None and not manual else 1.0
    severities = dict(routing.severities) if routing is not None else {}
    composition = Composition(bank=bank, weights=weights, fused=fused, source=source, notes=notes,
                              confidence=confidence, severities=severities)
    order = composition.in_order()
    if order is None:
        return composition
    note = (f"{', '.join(order[0].weights)} restored first, then the global stage of "
            f"{', '.join(composition.staged_kinds())} "
            f"(whose LoRA sits this composition out)")
    floor, full_from = bank.manifest.router.reread_floor, bank.manifest.router.full_stage_from
    raised = [name for name in composition.staged_kinds() if floor is not None and composition.weights[name] >= floor]
    if source != "router" or routing.normalisation != "sigmoid" or not raised:
        return replace(composition, notes=notes + (note,))
    in_full = f", and runs its stage at 1 from {full_from:g}" if full_from is not None else ""
    composition = replace(composition, notes=notes + (
        f"{note}; the image is read again after that pass, and {', '.join(raised)} takes the larger of the two "
        f"weights{in_full}",))
    return replace(composition, reread=partial(_read_again, composition, routing, floor, full_from))


def _read_again(composition: Composition, routing: RoutingResult, floor: float, full_from: float | None,
                image: torch.Tensor) -> Composition:
    """``Composition.reread`` of a routed composition: the image after its first pass routed as the first was, and
    each global kind kept at ``floor`` or more raised to the second reading's weight where that is larger, and to 1
    where it reaches ``full_from`` (``raise_global_weights``)."""
    again = router_for(composition.bank).route(image, routing.top_k, routing.temperature, routing.normalisation)[0]
    return raise_global_weights(composition, compose(composition.bank, again), floor, full_from)


def restore_notes(bank: LoraBank, routing: RoutingResult, composition: Composition | None = None) -> list[str]:
    """What the automatic restore will do beyond the router's own notes (the bank's do-no-harm rules: a weak
    second kind left out, an unknown degradation's scaled weights), for the estimator's table; ``composition``:
    ``compose(bank, routing)`` when the caller has it already."""
    composition = composition or compose(bank, routing)
    return [note for note in composition.notes if note not in routing.notes]


@dataclass(frozen=True)
class RestorePlan:
    """Every option of a restore, validated once; ``run`` then restores any number of images with it."""

    backbone: Backbone
    bank: LoraBank
    manual: Mapping[str, float]
    mode: str
    top_k: int | None
    temperature: float | None
    fused: bool
    strength: float
    options: SamplerOptions
    spatial: bool
    window: int

    def run(self, images: torch.Tensor, progress: ProgressFn | None = None,
            check_interrupt: InterruptFn | None = None) -> tuple[torch.Tensor, list[Composition]]:
        """Route each image (unless the mode is "manual"), compose, restore; only the images are checked here."""
        images = as_image_batch(images)
        if self.mode == "manual":
            compositions = [compose(self.bank, None, self.manual, "manual", self.fused)]
        elif self.spatial:
            return self._run_spatial(images, progress, check_interrupt)
        else:
            routings = router_for(self.bank).route(images, self.top_k, self.temperature)
            compositions = [compose(self.bank, r, self.manual, self.mode, self.fused) for r in routings]
        restored = _restore_composed(images, self.backbone, compositions, self.strength, self.options, progress,
                                     check_interrupt)
        return restored, compositions * images.shape[0] if len(compositions) == 1 else compositions

    def _run_spatial(self, images, progress, check_interrupt) -> tuple[torch.Tensor, list[Composition]]:
        regions = _route_regions(self.bank, images, self.window, self.top_k, self.temperature)
        summaries = []
        for region in regions:
            confidence, notes = self._region_confidence(region)
            summaries.append(replace(
                compose(self.bank, None, region.mean_weights(), "manual", self.fused),
                source="router per region" + ("+manual" if self.manual else ""), confidence=confidence,
                notes=(f"per-region routing: {self.window} px windows, {region.weights[0].numel()} of them",
                       *region.notes, *notes)))
        def compose_region(result: RoutingResult) -> Composition:
            return compose(self.bank, result, self.manual, self.mode, self.fused)

        def read_again(image: torch.Tensor) -> RegionWeights:
            return _route_regions(self.bank, image, self.window, self.top_k, self.temperature)[0]

        # each global adapter on the part of the image its windows keep it for; the LoRAs follow the regions, in the
        # whole-image order (noise before the global stage it precedes, which the denoised image is read again for)
        restored = restore_regions(self.backbone, images, regions, compose_region, self.options, progress=progress,
                                   check_interrupt=check_interrupt,
                                   skip=[summary.confidence == 0 for summary in summaries], read_again=read_again)
        return torch.cat([_blend(image[None], out[None], self.strength * self._region_strength(region, summary))
                          for image, out, region, summary in zip(images, restored, regions, summaries)]), summaries

    def _region_strength(self, region: RegionWeights, summary: Composition) -> float | torch.Tensor:
        """The strength of a per-region restore: per pixel, from the damage its windows read, with a presence router
        (do no harm region by region); the summary's otherwise (manual weights: 1)."""
        policy = self._presence_policy(region)
        if policy is None or not summary.confidence:
            return summary.confidence
        return region.strength_map(policy.confidence_full, policy.confidence_floor)

    def _presence_policy(self, region: RegionWeights) -> RouterDefaults | None:
        """The bank's do-no-harm settings when they apply to a per-region restore: a presence router with
        ``confidence_full`` set, and no manual weights (never scaled)."""
        policy = self.bank.manifest.router
        if self.manual or region.normalisation != "sigmoid" or policy.confidence_full is None:
            return None
        return policy

    def _region_confidence(self, region: RegionWeights) -> tuple[float, tuple[str, ...]]:
        """The summary's strength of a per-region restore and its note: the ramp at the strongest damage any window
        reads (0: the image is returned unchanged, with no pass; each pixel's own strength follows its windows,
        ``_region_strength``); manual weights are never scaled."""
        policy = self._presence_policy(region)
        if policy is None:
            return 1.0, ()
        kind, strongest = region.strongest_damage()
        confidence = presence_confidence(strongest, policy.confidence_full, policy.confidence_floor)
        return confidence, (() if confidence == 1 else
                            (unsure_note(" in any region", f"{kind} {strongest:.2f}", confidence),))


def plan_restore(
    backbone: Backbone | None = None,
    bank: LoraBank | None = None,
    *,
    manual: Mapping[str, float] | None = None,
    mode: str = "manual",
    top_k: int | None = None,
    temperature: float | None = None,
    fused: bool = True,
    strength: float = 1.0,
    options: SamplerOptions | None = None,
    spatial: bool = False,
    window: int = DEFAULT_WINDOW,
) -> RestorePlan:
    """Check every option before any work, used or not (a folder restore checks them once, not per image).

    With no manual weights the mode is irrelevant: the router decides alone.
    """
    strength = check_range("strength", strength, 0.0, 1.0)
    if mode not in BLEND_MODES:
        raise InputError(f"mode must be one of {BLEND_MODES}, got {mode!r}")
    backbone = backbone or default_backbone()
    options = options or SamplerOptions()
    options.validate(backbone)
    bank = bank or load_bank()
    manual = check_weights(dict(manual or {}), bank)
    check_routing_options(bank, top_k, temperature, window)
    return RestorePlan(backbone=backbone, bank=bank, manual=manual, mode=mode if manual else "override",
                       top_k=top_k, temperature=temperature, fused=bool(fused), strength=strength, options=options,
                       spatial=bool(spatial), window=window)


def apply_strength(original: torch.Tensor, restored: torch.Tensor, strength: float) -> torch.Tensor:
    """0 = the input, 1 = the full restoration, linear in between."""
    return _blend(original, restored, check_range("strength", strength, 0.0, 1.0))


def _blend(original: torch.Tensor, restored: torch.Tensor, strength: float) -> torch.Tensor:
    return (original + strength * (restored - original)).clamp(0, 1)


def restore(
    images: torch.Tensor,
    backbone: Backbone | None = None,
    bank: LoraBank | None = None,
    *,
    manual: Mapping[str, float] | None = None,
    mode: str = "manual",
    top_k: int | None = None,
    temperature: float | None = None,
    fused: bool = True,
    strength: float = 1.0,
    options: SamplerOptions | None = None,
    progress: ProgressFn | None = None,
    check_interrupt: InterruptFn | None = None,
    spatial: bool = False,
    window: int = DEFAULT_WINDOW,
) -> tuple[torch.Tensor, list[Composition]]:
    """Route each image (unless ``mode`` is "manual"), compose with ``manual`` weights, restore.

    With no manual weights the mode is irrelevant: the router decides alone. ``spatial``: route
    per region (windows of ``window`` px) and restore each tile with its own composition; the
    returned compositions then hold each image's average weights, for display.
    """
    plan = plan_restore(backbone, bank, manual=manual, mode=mode, top_k=top_k, temperature=temperature, fused=fused,
                        strength=strength, options=options, spatial=spatial, window=window)
    return plan.run(images, progress, check_interrupt)


def restore_composed(images: torch.Tensor, backbone: Backbone, compositions: Sequence[Composition],
                     strength: float = 1.0, options: SamplerOptions | None = None, progress: ProgressFn | None = None,
                     check_interrupt: InterruptFn | None = None) -> torch.Tensor:
    """Restore with compositions already made (one for all images, or one each), at ``strength``.

    Do no harm: each image's strength is scaled by its composition's confidence, so an unsure router's
    restore is blended towards the input (its routing notes say so).
    """
    strength = check_range("strength", strength, 0.0, 1.0)  # before any work, not after the restore
    options = options or SamplerOptions()
    options.validate(backbone)
    return _restore_composed(as_image_batch(images), backbone, compositions, strength, options, progress,
                             check_interrupt)


def _restore_composed(images: torch.Tensor, backbone: Backbone, compositions: Sequence[Composition], strength: float,
                      options: SamplerOptions, progress: ProgressFn | None,
                      check_interrupt: InterruptFn | None) -> torch.Tensor:
    restored = restore_batch(backbone, images, list(compositions), options, progress=progress,
                             check_interrupt=check_interrupt)
    per_image = list(compositions) * images.shape[0] if len(compositions) == 1 else compositions
    return torch.cat([_blend(image[None], out[None], strength * composition.confidence)
                      for image, out, composition in zip(images, restored, per_image)])
