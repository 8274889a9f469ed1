"""Presence heads on the frozen router features: s_o = [z, 1]·B is a logit, sigmoid(s_o) a calibrated
probability that the kind's damage is in the image.

The cosine router (``fit.py``) learns which kind *wins* from one synthesis on 30 interiors; these
heads learn whether each kind is *present*, by binary cross-entropy, from many scenes and three
syntheses at once:
- scenes: the template renders, the 30 training interiors and the Debian TRAIN scenes (the scene
  pool of ``tools/build_scene_pool.py``), each photograph at several scales;
- damage: ``uir_lora.degrade``'s standard models and ``uir_lora.lab.degrade_alt``, one kind or a compatible
  mixture of 2-3, each with its own severity; clean crops too. The "wide" third of the examples is the
  standard models with the wide profile's camera finish (faint sensor noise, mild JPEG) on every example, the
  other two get it on half of theirs, so that a blurred photo's faint noise does not read as the noise kind
  (the wide profile's own kernels and curves do not reach these examples);
- examples: native-resolution 224 px crops as windows of their photo, and whole photos encoded as
  the router encodes a user's image (grid crops, averaged).
Features are cached as safetensors, keyed by the data's settings, the encoder and the synthesis ``version``
(encoding is the slow part).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ...degrade import KINDS, SAME_DAMAGE, canonical_kinds, compatible
from ...router.encoder import DegradationEncoder
from ...router.trained import with_constant
from .data import CLEAN, Standardisation, default_cache_dir

IMPLEMENTATIONS = ("standard", "wide", "degrade_alt")
SHIPPED_SEEDS = tuple(range(6))
"""The example sets (one per seed) the shipped heads are fitted on (docs/router.md, *How many examples*)."""


@dataclass(frozen=True)
class PresenceData:
    """What the examples are; every field changes the cached features."""

    examples: int = 8000
    seed: int = 0
    crop: int = 224
    whole_share: float = 0.2
    """Share of whole-photo examples (short side ``whole_sides``), encoded through the router's grid crops."""
    whole_sides: tuple[int, int] = (256, 720)
    clean_share: float = 0.2
    mixture_share: float = 0.3
    min_severity: float = 0.1
    finish_share: float = 0.5
    scene_scales: int = 3
    version: int = 2
    """Bump when a synthesis changes what an example looks like: the code is not part of the cache key
    (2: low light as a camera develops it)."""


def _views(seed: int, scales: int, smallest: int, log: Callable[[str], None] = print) -> list[list[np.ndarray]]:
    """Clean pictures in three groups (renders, interiors, Debian TRAIN scenes), each photograph at
    ``scales`` random sizes (short side from ``smallest`` to 1080 px, never above its own)."""
    from PIL import Image

    from ...errors import InputError
    from ..scenes import load_scenes
    from ..train.data import media_images, split_photos

    rng = np.random.default_rng(seed)

    def scaled(array: np.ndarray) -> list[np.ndarray]:
        image = Image.fromarray(array)
        out = []
        for _ in range(scales):
            short = int(rng.integers(min(smallest, min(image.size)), min(1080, min(image.size)) + 1))
            factor = min(image.size) / short
            size = (round(image.width / factor), round(image.height / factor))
            out.append(np.asarray(image.resize(size, Image.BOX)) if factor > 1 else array)
        return out

    renders = [np.asarray(image) for _, image in media_images(min_side=smallest)]
    interiors = []
    for path in split_photos()[0]:
        with Image.open(path) as image:
            interiors += scaled(np.asarray(image.convert("RGB")))
    try:
        scenes = [view for _, array in load_scenes("TRAIN") for view in scaled(array)]
    except InputError as exc:  # the pool is optional, as for the LoRA trainers: say so, since it changes the data
        log(f"presence examples without the Debian scenes: {exc}")
        scenes = []
    return [group for group in (renders, interiors, scenes) if group]


def _pick(groups: list[list[np.ndarray]], gen: torch.Generator) -> np.ndarray:
    group = groups[int(torch.randint(0, len(groups), (), generator=gen))]
    return group[int(torch.randint(0, len(group), (), generator=gen))]


def _window(array: np.ndarray, height: int, width: int, gen: torch.Generator) -> torch.Tensor:
    top = int(torch.randint(0, array.shape[0] - height + 1, (), generator=gen))
    left = int(torch.randint(0, array.shape[1] - width + 1, (), generator=gen))
    image = torch.from_numpy(np.ascontiguousarray(array[top:top + height, left:left + width]))
    return image.permute(2, 0, 1).float()[None] / 255


def draw_kinds(config: PresenceData, gen: torch.Generator, kinds: Sequence[str] = KINDS) -> list[str]:
    """[] (clean), one kind, or a compatible mixture of 2-3, by ``config``'s clean and mixture shares (also the
    trained encoder's draw, train_encoder.py)."""
    u = float(torch.rand((), generator=gen))
    if u < config.clean_share:
        return []
    if u < config.clean_share + config.mixture_share:
        wanted = int(torch.randint(2, 4, (), generator=gen))
        picked: list[str] = []
        for index in torch.randperm(len(kinds), generator=gen).tolist():
            if len(picked) < wanted and compatible([*picked, kinds[index]]):
                picked.append(kinds[index])
        if len(picked) >= 2:
            return picked
    return [kinds[int(torch.randint(0, len(kinds), (), generator=gen))]]


def damage(image: torch.Tensor, kinds: Sequence[str], implementation: str, frame_side: int,
           config: PresenceData, gen: torch.Generator) -> torch.Tensor:
    """``image`` [1,3,H,W] with ``kinds`` by one implementation, each kind at its own severity."""
    from ...degrade import degrade
    from ...degrade.wide import camera_finish
    from ..degrade_alt import degrade as degrade_alt

    x = image
    for kind in canonical_kinds(list(kinds)) if kinds else []:
        level = config.min_severity + (1 - config.min_severity) * float(torch.rand((), generator=gen))
        if implementation == "degrade_alt":
            x = degrade_alt(x, kind, generator=gen, severity=level)
        else:
            x = degrade(x, kind, generator=gen, severity=level, frame_side=frame_side, profile="standard")
        x = x.clamp(0, 1)
    if implementation == "wide" or float(torch.rand((), generator=gen)) < config.finish_share:
        x = camera_finish(x, gen)  # the wide profile's finish, on every implementation
    return x.clamp(0, 1)


def example(groups: list[list[np.ndarray]], config: PresenceData, index: int,
            kinds: Sequence[str] = KINDS) -> tuple[torch.Tensor, list[str], bool]:
    """Example ``index`` (seeded by (seed, index)): the damaged picture, its kinds, whole or crop."""
    gen = torch.Generator().manual_seed(config.seed * 1_000_003 + index)
    array = _pick(groups, gen)
    height, width = array.shape[:2]
    whole = float(torch.rand((), generator=gen)) < config.whole_share
    if whole:
        low, high = config.whole_sides
        short = int(torch.randint(low, high + 1, (), generator=gen))
        factor = max(1.0, min(height, width) / short)
        image = _window(array, height, width, gen)
        if factor > 1:
            size = (round(height / factor), round(width / factor))
            image = torch.nn.functional.interpolate(image, size=size, mode="area")
        frame = min(image.shape[-2:])
    else:
        size = config.crop
        if min(height, width) < size:
            image = torch.nn.functional.interpolate(_window(array, height, width, gen), size=(size, size),
                                                    mode="bilinear")
        else:
            image = _window(array, size, size, gen)
        frame = max(size, min(height, width))
    image = torch.rot90(image, int(torch.randint(0, 4, (), generator=gen)), (2, 3)).contiguous()
    names = draw_kinds(config, gen, kinds)
    implementation = IMPLEMENTATIONS[int(torch.randint(0, len(IMPLEMENTATIONS), (), generator=gen))]
    return damage(image, names, implementation, frame, config, gen), names, whole


def presence_targets(names: Sequence[str], classes: Sequence[str]) -> torch.Tensor:
    """1 for each kind present, 1 for ``clean`` when none is."""
    target = torch.zeros(len(classes))
    for name in names or [CLEAN]:
        target[list(classes).index(name)] = 1.0
    return target


def build_features(encoder: DegradationEncoder, config: PresenceData, classes: Sequence[str],
                   log: Callable[[str], None] = print) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw router features [n, dim] and presence targets [n, classes] of ``config.examples`` examples."""
    kinds = [c for c in classes if c != CLEAN]
    groups = _views(config.seed, config.scene_scales, config.crop, log)
    key = hashlib.sha256(json.dumps({"data": asdict(config), "encoder": encoder.spec_key(), "classes": list(classes),
                                     "pictures": [len(group) for group in groups]},
                                    sort_keys=True).encode()).hexdigest()[:20]
    path = default_cache_dir() / f"presence-{key}.safetensors"
    if path.is_file():
        cached = load_file(str(path))
        return cached["features"].double(), cached["targets"]
    features, targets = [], []
    start = time.perf_counter()
    for index in range(config.examples):
        image, names, _ = example(groups, config, index, kinds)
        features.append(encoder.features(image)[0].double())
        targets.append(presence_targets(names, classes))
        if (index + 1) % 500 == 0:
            log(f"{index + 1}/{config.examples} examples, {time.perf_counter() - start:.0f} s")
    out = torch.stack(features), torch.stack(targets)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"features": out[0].float(), "targets": out[1]}, str(path))
    return out


def fit_presence(z: torch.Tensor, targets: torch.Tensor, weight_decay: float, steps: int = 200,
                 positive_weight: float = 1.0) -> torch.Tensor:
    """B [classes, dim + 1] (weights, bias last) by binary cross-entropy + L2 on the weights, float64 L-BFGS:
    one logistic regression per class on standardised features z [n, dim]; ``positive_weight`` weighs each
    positive example's loss against a negative's (``pos_weight`` of the loss)."""
    x = with_constant(z.double())
    y = targets.double()
    rows = torch.zeros(y.shape[1], x.shape[1], dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([rows], lr=1, max_iter=steps, history_size=20, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        logits = x @ rows.T
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, y, pos_weight=torch.tensor(positive_weight, dtype=torch.float64))
        loss = loss + weight_decay * (rows[:, :-1] ** 2).sum() / 2
        loss.backward()
        return loss

    optimiser.step(closure)
    return rows.detach()


HELD_OUT_SHARE = 0.1
EXAMPLES_FILE = "router_examples.safetensors"
SHIPPED_EXAMPLES = 2000
"""Training examples kept in the bank for `bank add` (float16, about 2.4 KB each with the frozen encoder's
features): fewer let a new kind take more photos of the existing kinds (docs/your_own_kind.md)."""


def write_examples(bank_dir: Path, z: torch.Tensor, targets: torch.Tensor, classes: Sequence[str],
                   count: int = SHIPPED_EXAMPLES, seed: int = 0) -> str:
    """Keep a random sample of the heads' standardised training features and their kinds in the bank, so that
    `bank add` can place a new kind against every scene and synthesis the heads saw, on any machine."""
    from ...bank.writer import save_tensor_file

    pick = torch.randperm(len(z), generator=torch.Generator().manual_seed(seed))[:count]
    save_tensor_file({"features": z[pick].to(torch.float16), "targets": targets[pick].to(torch.uint8)},
                     Path(bank_dir) / EXAMPLES_FILE, {"classes": json.dumps(list(classes)),
                                                      "what": "standardised router features of presence "
                                                              "training examples, and their kinds"})
    return EXAMPLES_FILE


def read_examples(bank_dir: Path, file: str, dim: int) -> torch.Tensor:
    """The standardised features [n, ``dim``] kept by ``write_examples`` (float32); [0, dim] when ``file`` is empty."""
    from ...bank.store import bank_member
    from ...errors import BankError

    if not file:
        return torch.zeros(0, dim)
    path = bank_member(Path(bank_dir).resolve(), file)
    try:
        features = load_file(str(path))["features"]
    except (SafetensorError, OSError, KeyError, ValueError) as exc:  # missing, truncated or foreign file
        raise BankError(f"{path}: cannot read the router's examples ({exc}); re-run `uir-lora train-presence` "
                        f"or restore the bank folder") from None
    if features.ndim != 2 or features.shape[1] != dim or not torch.isfinite(features).all():
        raise BankError(f"{path}: the router's examples must be finite features [n, {dim}], got "
                        f"{list(features.shape)}; re-run `uir-lora train-presence`")
    return features.float()


def held_out_scores(scores: torch.Tensor, targets: torch.Tensor, classes: Sequence[str]) -> dict:
    """Top-1 on single kinds and clean, two kinds present in the top 2 on mixtures, mean presence error."""
    single = targets.sum(1) == 1
    mixture = targets.sum(1) >= 2
    top1 = scores.argmax(1)
    hits = targets[torch.arange(len(targets)), top1] > 0
    top2 = scores.topk(2, dim=1).indices
    both = torch.tensor([set(pair.tolist()) <= set(row.nonzero().flatten().tolist())  # two of the kinds present
                         for row, pair in zip(targets, top2)])
    return {"examples": len(targets), "top1_single": round(float(hits[single].float().mean()), 4),
            "top2_mixtures": round(float(both[mixture].float().mean()), 4) if mixture.any() else None,
            "presence_error": round(float((torch.sigmoid(scores) - targets).abs().mean()), 4),
            "classes": list(classes)}


def fit_bank_presence(bank_dir: Path, config: PresenceData, seeds: Sequence[int], weight_decay: float,
                      top_k: int = 2, confidence_full: float = 0.5, log: Callable[[str], None] = print) -> dict:
    """Fit presence heads on the frozen encoder of a bank and write them as its router; LoRA files untouched.

    Every LoRA of a synthesisable kind (or ``clean``) gets B = its head's row; any other LoRA gets a B
    that routes nothing until ``uir-lora bank add`` places it. A tenth of the examples is held out and
    scored first; the written heads are then fitted on all of them."""
    from ...bank.manifest import RouterDefaults, placeholder_embedding, read_manifest, write_manifest
    from ...errors import BankError
    from ...router.trained import make_encoder

    bank_dir = Path(bank_dir)
    manifest = read_manifest(bank_dir)
    if manifest.encoder.trained:
        raise BankError(f"bank {manifest.name!r} routes with the trained encoder; presence heads go on the frozen "
                        f"ImageNet encoder (re-run `uir-lora train-router` first to return to it)")
    classes = [name for name in manifest.names if name in KINDS or name == CLEAN]
    if CLEAN not in classes or len(classes) < 2:
        raise BankError(f"bank {manifest.name!r} needs a 'clean' LoRA and at least one LoRA of a built-in kind "
                        f"for presence heads; it has {', '.join(manifest.names)}")
    encoder = make_encoder(manifest.encoder, bank_dir)
    parts = [build_features(encoder, PresenceData(**{**asdict(config), "seed": seed}), classes, log) for seed in seeds]
    features, targets = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    held = torch.arange(len(features)) % round(1 / HELD_OUT_SHARE) == 0
    standard = Standardisation.of(features[~held])
    rows = fit_presence(standard(features[~held]), targets[~held], weight_decay)
    held_out = held_out_scores(with_constant(standard(features[held])) @ rows.T, targets[held], classes)
    log(f"held-out examples: {held_out}")
    standard = Standardisation.of(features)
    z = standard(features)
    rows = fit_presence(z, targets, weight_decay)
    examples = write_examples(bank_dir, z, targets, classes)
    by_class = dict(zip(classes, rows.float()))
    unset = [entry.name for entry in manifest.loras if entry.name not in by_class]
    manifest.encoder.feature_mean = standard.mean.float().tolist()
    manifest.encoder.feature_std = standard.std.float().tolist()
    record = {"recipe": "uir-lora train-presence", "data": asdict(config), "seeds": list(seeds),
              "weight_decay": weight_decay, "examples": len(features), "held_out": held_out,
              "weights": "sigmoid of the presence logit [z, 1]·B (binary cross-entropy per kind); strength x "
                         "presence / confidence_full below it",
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    manifest.router = RouterDefaults(
        top_k=min(top_k, len(manifest.loras)), temperature=1.0, normalisation="sigmoid", similarity="logit",
        unknown_strength=manifest.router.unknown_strength, confidence_full=confidence_full, calibration=record,
        confidence_floor=manifest.router.confidence_floor,
        follower_floor=manifest.router.follower_floor, reread_floor=manifest.router.reread_floor,
        full_stage_from=manifest.router.full_stage_from,
        masking_kinds=list(manifest.router.masking_kinds),
        examples=examples, alternatives=[list(group) for group in SAME_DAMAGE if set(group) <= set(classes)])
    for entry in manifest.loras:
        entry.embedding = (by_class[entry.name].tolist() if entry.name in by_class
                           else placeholder_embedding(manifest.encoder, manifest.router))
        entry.route_margin, entry.embedding_of = 0.0, "d"
    write_manifest(manifest, bank_dir)
    return {**record, "unset": unset}
