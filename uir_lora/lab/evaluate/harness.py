"""Evaluation harness: synthesise each degradation on clean photos, restore with every method, score.

Methods (each row of the results names one):
- ``input``: the degraded image untouched;
- ``router``: pipeline.restore with the bank's defaults (what a user gets);
- ``oracle``: the true kind's LoRA at weight 1 (mixtures: each true LoRA at 1/n);
- ``multitask``: the same backbone fully fine-tuned on all kinds at once (when given);
- ``ffdnet_sigma``: the pretrained FFDNet told the true noise level (cases that contain noise);
- classical methods from classical.py, named after themselves.
"""

from __future__ import annotations

import ast
import hashlib
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ... import pipeline
from ...backbones.base import Backbone
from ...backbones.embedded import EmbeddedFFDNetBackbone, FFDNet
from ...bank.store import LoraBank
from ...degrade import KINDS, canonical_kinds, degrade
from ...sampler.tiling import run_tiled
from .classical import classical_methods
from .metrics import METRICS, measure

MIXED_PAIRS: tuple[tuple[str, str], ...] = (
    ("noise", "jpeg"), ("low_light", "noise"), ("haze", "noise"), ("motion_blur", "jpeg"), ("rain", "haze"),
)
NOISE_KINDS = ("noise", "poisson_noise")
LEARNED = ("router", "oracle", "multitask", "ffdnet_sigma")


@dataclass(frozen=True)
class Case:
    """One degradation setting: a single kind or a mixture, in physical order."""

    kinds: tuple[str, ...]

    @property
    def name(self) -> str:
        return "+".join(self.kinds)


def default_cases(kinds: Sequence[str] | None = None, pairs: bool = True) -> list[Case]:
    """Every kind (or the given ones), then the mixed pairs whose kinds are all selected."""
    chosen = list(kinds or KINDS)
    cases = [Case(tuple(canonical_kinds(k))) for k in chosen]
    if pairs:
        cases += [Case(tuple(canonical_kinds(p))) for p in MIXED_PAIRS if set(p) <= set(chosen)]
    return cases


@dataclass
class Multitask:
    """A fully fine-tuned backbone and the fixed conditioning it was trained with."""

    backbone: Backbone
    conditioning: dict[str, float]
    info: dict = field(default_factory=dict)


def load_multitask(path: str | Path) -> Multitask:
    """Read a ``uir-lora train-lora --full-finetune`` output (FFDNet weights + metadata)."""
    path = Path(path)
    net = FFDNet()
    net.load_state_dict(load_file(str(path)), strict=True)
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    provenance = ast.literal_eval(metadata.get("provenance", "{}"))  # written with str(dict)
    scores = provenance.get("sigma_scores", {})
    sigma = float(max(scores, key=scores.get)) / 255.0 if scores else 0.0  # the trainer's fixed sigma
    return Multitask(EmbeddedFFDNetBackbone(net), {"sigma": sigma}, provenance)


def synthesise(clean: torch.Tensor, case: Case, seed: int, severity: float | None = None
               ) -> tuple[torch.Tensor, float | None]:
    """Degrade stage by stage (the same stream as degrade(clean, kinds)); returns the true noise sigma.

    The sigma is the std of what the noise stage added, so a non-blind denoiser can be told it.
    """
    generator = torch.Generator().manual_seed(seed)
    image, sigma = clean, None
    for kind in case.kinds:
        before = image
        image = degrade(image, kind, generator=generator, severity=severity)
        if kind in NOISE_KINDS:
            sigma = float((image - before).std())
    return image, sigma


def bare_restore(backbone: Backbone, image: torch.Tensor, conditioning: Mapping[str, float]) -> torch.Tensor:
    """The backbone alone (no LoRA active) with the given conditioning, tiled like the pipeline."""

    def step(tile: torch.Tensor, _box: tuple[int, int, int, int]) -> torch.Tensor:
        with torch.inference_mode():
            return backbone.restore_step(tile.to(backbone.device, backbone.dtype), conditioning).float().clamp(0, 1)

    return run_tiled(image, step, tile=512, overlap=backbone.tile_overlap, multiple=backbone.size_multiple)


Method = Callable[[torch.Tensor], tuple[torch.Tensor, dict]]


def case_methods(case: Case, backbone: Backbone, bank: LoraBank, sigma: float | None,
                 multitask: Multitask | None) -> dict[str, Method]:
    """Every method that applies to ``case``: name -> f(degraded) -> (restored, extra info)."""

    def router(x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        out, comps = pipeline.restore(x, backbone, bank)
        return out, {"weights": {k: round(v, 4) for k, v in comps[0].weights.items()}}

    methods: dict[str, Method] = {"input": lambda x: (x, {}), "router": router}
    if set(case.kinds) <= set(bank.manifest.names):
        manual = {kind: 1.0 / len(case.kinds) for kind in case.kinds}
        methods["oracle"] = lambda x: (pipeline.restore(x, backbone, bank, manual=manual, mode="manual")[0],
                                       {"weights": manual})
    if multitask is not None:
        methods["multitask"] = lambda x: (bare_restore(multitask.backbone, x, multitask.conditioning), {})
    if sigma is not None:
        methods["ffdnet_sigma"] = lambda x: (bare_restore(backbone, x, {"sigma": sigma}), {"sigma": sigma})
    for name, function in classical_methods(case.kinds).items():
        methods[name] = lambda x, f=function: (f(x), {})
    return methods


def image_digest(image: torch.Tensor) -> str:
    """sha256 of the clean image as 8-bit RGB (records exactly what was evaluated)."""
    array = (image[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
    return hashlib.sha256(array.tobytes()).hexdigest()


def evaluate(
    images: Sequence[tuple[str, torch.Tensor]],
    backbone: Backbone,
    bank: LoraBank,
    *,
    cases: Sequence[Case] | None = None,
    multitask: Multitask | None = None,
    seed: int = 0,
    severity: float | None = None,
    keep: Callable[[str, Case, str], bool] | None = None,
    progress: Callable[[int, int], None] | None = None,
    indices: Sequence[int] | None = None,
    only: Collection[str] | None = None,
    extra_methods: Mapping[str, Method] | None = None,
) -> tuple[list[dict], dict[tuple[str, str, str], torch.Tensor]]:
    """Score every method on every (image, case); returns result rows and the images ``keep`` asked for.

    Each (image, case) gets its own seed, so a method sees the same degraded image as every other.
    ``keep(image_name, case, method)`` selects outputs to return (for the gallery), keyed by
    (image name, case name, method); the degraded input is "input" and the clean image "clean".
    ``indices``: each image's position in the whole set (for shards), which fixes its seeds.
    ``only``: run just these methods (e.g. a baseline added to an earlier run with the same seeds).
    ``extra_methods``: more methods for every case (e.g. another backbone), scored on the same degraded images.
    """
    cases = list(cases or default_cases())
    rows: list[dict] = []
    kept: dict[tuple[str, str, str], torch.Tensor] = {}
    total = len(images) * len(cases)
    for i, (index, (name, clean)) in enumerate(zip(indices or range(len(images)), images)):
        for j, case in enumerate(cases):
            case_seed = seed + 1000 * index + j
            degraded, sigma = synthesise(clean, case, case_seed, severity)
            if keep and keep(name, case, "clean"):
                kept[(name, case.name, "clean")] = clean
            methods = {**case_methods(case, backbone, bank, sigma, multitask), **(extra_methods or {})}
            for method, function in methods.items():
                if only and method not in only:
                    continue
                start = time.perf_counter()
                restored, extra = function(degraded)
                seconds = time.perf_counter() - start
                rows.append({"image": name, "case": case.name, "kinds": list(case.kinds), "method": method,
                             "seed": case_seed, "seconds": round(seconds, 4), **measure(restored, clean), **extra})
                if keep and keep(name, case, method):
                    kept[(name, case.name, method)] = restored
            if progress:
                progress(i * len(cases) + j + 1, total)
    return rows, kept


def aggregate(rows: Iterable[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """case -> method -> {metric mean over images, "n", and "<metric>_gain" over the input}."""
    groups: dict[str, dict[str, list[dict]]] = {}
    for row in rows:
        groups.setdefault(row["case"], {}).setdefault(row["method"], []).append(row)
    table: dict[str, dict[str, dict[str, float]]] = {}
    for case, methods in groups.items():
        table[case] = {}
        for method, items in methods.items():
            stats = {m: float(np.mean([r[m] for r in items])) for m in METRICS}
            stats["n"] = len(items)
            stats["seconds"] = float(np.mean([r["seconds"] for r in items]))
            table[case][method] = stats
        base = table[case].get("input")
        for stats in table[case].values():
            for metric in METRICS:
                stats[f"{metric}_gain"] = stats[metric] - base[metric] if base else float("nan")
    return table


def routing_accuracy(rows: Iterable[dict]) -> dict[str, float]:
    """Per case: how often the router's largest weight went to one of the true kinds."""
    hits: dict[str, list[bool]] = {}
    for row in rows:
        if row["method"] == "router" and row.get("weights"):
            top = max(row["weights"], key=row["weights"].get)
            hits.setdefault(row["case"], []).append(top in row["kinds"])
    return {case: float(np.mean(values)) for case, values in hits.items()}
