"""Weighted LoRA composition: x_out = f0(x) + sum_i s_i f_i(x) at every adapted layer.

Two modes with the same result (up to float rounding):
- unfused: peft runs the K active adapters beside the frozen layer, adapter i scaled by s_i;
- fused (default): the weighted deltas are merged into the frozen weights, so a pass costs what
  the bare backbone costs: unmerged adapters add K extra low-rank products at every adapted layer of
  every pass, while a merge is paid once per composition (measured in docs/benchmarks.md).
Either way the backbone is returned to its base state afterwards, on success, error or interrupt:
fused weights are restored from a snapshot (bit-exact, not by subtracting the delta back).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import torch

from ..backbones.base import Backbone, with_measured
from ..bank.manifest import LoraEntry
from ..bank.store import LoraBank, backbone_lock
from ..errors import InputError
from ..global_stage import GlobalAdapter

MAX_WEIGHT = 4.0


@dataclass(frozen=True)
class Composition:
    """Which LoRAs of a bank are active, with what weights; what flows from Composer to Restore."""

    bank: LoraBank
    weights: Mapping[str, float]
    fused: bool = True
    source: str = "manual"
    """"router", "manual" or "router+manual": shown to users so they know what decided."""
    notes: tuple[str, ...] = field(default_factory=tuple)
    confidence: float = 1.0
    """Share of the requested strength to use: below 1 when the router is unsure of any damage (its notes
    say so), so the output stays close to the input; 1 when manual weights take part."""
    severities: Mapping[str, float] = field(default_factory=dict)
    """The router's severity reading per kind (0 mild .. 1 strong; the trained encoder's), which the global stage
    uses for the haze's transmission floor; empty for manual weights and encoders without a severity head."""
    reread: Callable[[torch.Tensor], Composition] | None = field(default=None, compare=False, repr=False)
    """For a composition split by ``in_order``: given the image after the first pass, the composition whose global
    stage runs on it (``pipeline.compose`` sets it from the bank's ``router.reread_floor``); None: this one."""

    def __post_init__(self) -> None:
        # the one check of a composition's weights: everything downstream (merge, conditioning) trusts them
        object.__setattr__(self, "weights", check_weights(self.weights, self.bank))

    def conditioning(self, backbone: Backbone, measurement: Mapping[str, float] | None = None) -> dict[str, float]:
        """The LoRAs' conditioning (e.g. FFDNet's sigma) blended by weight: ``blend_conditioning``. A LoRA's
        ``measured`` values come from ``measurement`` (``measure``), its recorded ones their ceiling; without a
        measurement it runs at the ceiling."""
        manifest = self.bank.manifest
        return blend_conditioning(backbone, [
            (weight, with_measured(manifest.lora(name).conditioning, manifest.lora(name).measured, measurement or {}))
            for name, weight in self.weights.items()])

    def measure(self, backbone: Backbone, image: torch.Tensor) -> dict[str, float]:
        """The conditioning values the active LoRAs take from ``image``: ``measure``."""
        return measure(backbone, image, [self.bank.manifest.lora(name) for name in self.weights])

    def global_adapters(self) -> list[tuple[float, GlobalAdapter]]:
        """(weight, global adapter) of the active kinds that have one (run by sampler.restore.global_stage)."""
        return [(weight, adapter) for name, weight in self.weights.items()
                if (adapter := self.bank.global_adapter(name)) is not None]

    def staged_kinds(self) -> list[str]:
        """The active kinds that have a global adapter, which the global stage runs."""
        return [name for name in self.weights if self.bank.global_adapter(name) is not None]

    def in_order(self) -> tuple[Composition, Composition | None] | None:
        """The passes of a composition that holds a kind restored before another's global stage
        (``LoraEntry.restored_before``: noise before low light): (those kinds, then the local kinds left or None), the
        global stage running between them (``restore_order``). None: the global stage, then one pass."""
        manifest = self.bank.manifest
        order = restore_order(self.weights, self.staged_kinds(), lambda name: manifest.lora(name).restored_before)
        if order is None:
            return None
        first, after = ({name: self.weights[name] for name in names} for names in order)
        return replace(self, weights=first), (replace(self, weights=after) if after else None)

    def dehaze_severity(self) -> float | None:
        """The severity read for the active kinds whose global adapter dehazes (their mean by weight), or None."""
        read = [(weight, self.severities[name]) for name, weight in self.weights.items()
                if name in self.severities and (adapter := self.bank.global_adapter(name)) is not None
                and adapter.dehaze and weight > 0]
        total = sum(weight for weight, _ in read)
        return sum(weight * severity for weight, severity in read) / total if read else None


def raise_global_weights(composition: Composition, again: Composition, floor: float,
                         full_from: float | None = None) -> Composition:
    """``composition`` with each global kind it keeps at ``floor`` or more at the larger of its weight and the one
    ``again`` (a second reading, of the image after the first pass) gives, with the severity of the reading that gave
    it, and at 1 where that weight reaches ``full_from``; every other weight as it was."""
    weights, severities = dict(composition.weights), dict(composition.severities)
    for name in composition.staged_kinds():
        if weights[name] < floor:
            continue
        if weights[name] < again.weights.get(name, 0.0):
            weights[name] = again.weights[name]
            if name in again.severities:
                severities[name] = again.severities[name]
        if full_from is not None and weights[name] >= full_from:
            weights[name] = 1.0
    return replace(composition, weights=weights, severities=severities)


def measure(backbone: Backbone, image: torch.Tensor, entries: Iterable[LoraEntry]) -> dict[str, float]:
    """The conditioning values that ``entries`` take from ``image`` ([1,3,H,W]: the whole photo, before any tiling,
    so the result does not depend on the tile size); empty, and nothing measured, when none of them measures any."""
    keys = {key for entry in entries for key in entry.measured}
    if not keys:
        return {}
    with torch.inference_mode():
        measured = backbone.measure_conditioning(image)
    return {key: float(measured[key][0]) for key in keys if key in measured}


def restore_order(names: Iterable[str], staged: Collection[str],
                  restored_before: Callable[[str], Collection[str]]) -> tuple[list[str], list[str]] | None:
    """The passes of a composition of ``names`` whose kinds ``staged`` have a global stage: the kinds restored before
    one of those stages (``restored_before(name)``: the global kinds that name's LoRA precedes), then the local kinds
    left, the global stage running between them; the staged kinds' LoRAs are left out (trained to follow their
    adapter, they gained nothing in a pass after it: docs/engine.md). None: the global stage, then one pass with
    every kind. The sampler and the joint trainer both order by it."""
    names, staged = list(names), set(staged)
    first = [name for name in names if staged.intersection(restored_before(name))]
    if not first:
        return None
    return first, [name for name in names if name not in first and name not in staged]


def blend_conditioning(backbone: Backbone, parts: Iterable[tuple[float, Mapping[str, float | torch.Tensor]]]
                       ) -> dict[str, float | torch.Tensor]:
    """Each conditioning value of the composed network from the LoRAs' own, as ``(weight, conditioning)``.

    A conditioning value is a level of damage the network is told to remove (FFDNet's sigma: a noise
    standard deviation), and independent damage adds in variance: value = sqrt(sum_i min(1, |w_i|) c_i^2).
    A LoRA keeps its own level when another kind joins it (noise + JPEG at weights 1 and 1 is denoised at
    least at the noise LoRA's sigma, where a weighted mean pulled it down towards JPEG's), and a LoRA at
    partial weight asks for part of its variance. The backbone's default fills keys a LoRA does not record;
    the result stays in the backbone's ``conditioning_ranges``.
    """
    parts = [(min(1.0, abs(weight)), values) for weight, values in parts if weight != 0]
    blended = dict(backbone.default_conditioning)
    if not parts:
        return blended
    for key in {k for _, values in parts for k in values} | set(blended):
        fallback = backbone.default_conditioning.get(key, 0.0)
        # a value is a float, or a tensor of one per image (a measured value in training): the same arithmetic
        value = sum(weight * values.get(key, fallback) ** 2 for weight, values in parts) ** 0.5
        low, high = backbone.conditioning_ranges.get(key, (-math.inf, math.inf))
        blended[key] = value.clamp(low, high) if isinstance(value, torch.Tensor) else min(max(value, low), high)
    return blended


def check_weights(weights: Mapping[str, float], bank: LoraBank) -> dict[str, float]:
    """Validate names and values; drops zero weights. Raises InputError naming the problem."""
    clean: dict[str, float] = {}
    for name, value in weights.items():
        if name not in bank.manifest.names:
            names = ", ".join(bank.manifest.names)
            raise InputError(f"unknown LoRA {name!r}; bank {bank.manifest.name!r} has: {names}")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise InputError(f"weight of {name!r} must be a finite number, got {value!r}")
        if abs(value) > MAX_WEIGHT:
            raise InputError(f"weight of {name!r} must be in [-{MAX_WEIGHT}, {MAX_WEIGHT}], got {value}")
        if value != 0:
            clean[name] = float(value)
    return clean


@contextmanager
def composed(backbone: Backbone, composition: Composition) -> Iterator[Backbone]:
    """Activate ``composition`` on ``backbone`` for the ``with`` body, then restore the base state.

    The body runs under the backbone's lock (bank/store.py:backbone_lock): other threads composing on
    the same backbone wait, so each sees only its own weights and gets the single-threaded result.
    """
    with backbone_lock(backbone):
        yield from _composed_unlocked(backbone, composition)


def _composed_unlocked(backbone: Backbone, composition: Composition) -> Iterator[Backbone]:
    adapters = composition.bank.attach(backbone)
    active = {adapters[name]: w for name, w in composition.weights.items()}
    layers = backbone.lora_layers()
    snapshots: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        if not active:
            pass  # base state already: adapters disabled
        elif composition.fused:
            for layer in layers:
                if not layer.disable_adapters:  # merged weights plus live adapters would count twice
                    layer.enable_adapters(False)
                if any(name in layer.lora_A for name in active):
                    snapshots.append(_merge_weighted(layer, active))
        else:
            for layer in layers:
                names = [a for a in active if a in layer.lora_A]
                if not names:
                    continue
                layer.enable_adapters(True)
                layer.set_adapter(names)
                for name in names:
                    layer.set_scale(name, active[name])
        yield backbone
    finally:
        for weight, original in snapshots:
            weight.data.copy_(original)
        for layer in layers:
            for name in active:
                if name in layer.lora_A:
                    layer.set_scale(name, 1.0)
            if not layer.disable_adapters:  # peft's disabling walks every adapter module: only when needed
                layer.enable_adapters(False)


def _merge_weighted(layer, active: Mapping[str, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """W <- W0 + sum_i s_i dW_i, computed in float32; returns (weight, snapshot of W0)."""
    weight = layer.get_base_layer().weight
    snapshot = weight.data.clone()
    terms = [scale * layer.get_delta_weight(name).float() for name, scale in active.items() if name in layer.lora_A]
    delta = terms[0]
    for term in terms[1:]:
        delta += term
    if not torch.isfinite(delta.sum()):  # one reduction: NaN and Inf (or an overflowing sum) propagate into it
        raise InputError("the weighted LoRA sum is not finite; lower the weights")
    weight.data.copy_(delta.add_(snapshot.float()).to(weight.dtype))  # W0 + delta in float32, rounded once
    return weight, snapshot
