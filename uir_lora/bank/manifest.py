"""The bank manifest: ``lora_bank/<bank>/manifest.json``, validated on every read.

One file describes a whole bank: which backbone (family and weight fingerprint) and which frozen
encoder it was made for, the router's defaults, and per LoRA its file, rank, alpha, target modules,
degradation embedding, training provenance and validation numbers.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import TEMPERATURE_RANGE, BankError
from ..paths import give_default_mode

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 32 << 20  # a 64-LoRA bank is well under 1 MB
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_\-]{0,63}")  # used with fullmatch: "$" would let a final newline in
FILE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,200}\.safetensors")  # no path, drive or backslash
MAX_NESTING = 32
"""JSON nesting a manifest may have (it needs 4); deeper input is refused before anything recurses over it."""
MAX_INTEGER_DIGITS = 30
"""Digits an integer in a manifest may have; huge ones would overflow floats or Python's int-to-text limit."""
MAX_TEXT_BYTES = 255
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
ENCODER_BLOCKS = range(11)  # EfficientNet-Lite0 blocks the encoder has channel counts for
NORMALISATIONS = ("softmax", "sum", "sigmoid")
"""How s = norm_K(s_o) turns the kept similarities into weights: a softmax over the K (weights sum to 1),
their share of the sum, or each logit's own sigmoid (the trained encoder's calibrated presence)."""
SIMILARITIES = ("cosine", "logit")
"""s_o = d·B as a cosine of the standardised feature and a unit embedding (train-router), or as a presence
logit: d = [standardised feature, 1] and B = a presence head's weights with its bias last (router/presence
heads and the trained encoder), whose sigmoid is the probability that the kind's damage is present."""
COSINE_MARGIN_LIMIT, LOGIT_MARGIN_LIMIT = 2.0, 100.0
"""Largest route margins: cosines differ by at most 2; presence logits of a placed kind stay far below 100."""
WHOLE_VIEW_SIDE = 128
WHOLE_VIEW_RANGE = (32, 1024)
"""The short sides in px that ``router.whole_view_side`` accepts, inclusive."""
EXPOSURE_STOPS = (0.15, 0.45)
"""``router.exposure_stops`` by default: the under-exposure (in stops, global_stage.underexposure_stops) from which
an exposure kind's presence starts to count, and from which it counts whole."""
NIGHT_SKY_VOID = (0.85, 0.95)
"""``router.night_sky_void`` by default: the share of dark sky (router.night_sky.void_share: black, or a smooth faint
glow) from which a photo starts to count as a night sky, and from which it counts whole."""
NIGHT_SKY_POINTS = (0.6, 0.8)
"""``router.night_sky_points`` by default: the level of the brightest points (router.night_sky.point_level) from which
a black photo starts to count as a night sky rather than an under-exposed one, and from which it counts whole."""
EXPOSURE_RANGE = (0.0, 5.0)
"""The stops that ``router.exposure_stops`` accepts, inclusive (the exposure anchor lifts by at most five)."""
MIN_COARSEST_SIDE = 32
"""A coarse-to-fine LoRA's smallest allowed ``coarsest_side``: below it a level holds too little of a photo."""
MAX_COARSEST_SIDE = 65536
"""Its largest: no photo's shorter side reaches it, so a larger value could only be a mistake."""
TRAINED_ENCODER = "da-efficientnet-lite0"
TRAINED_POOLED_DIM = 1600
"""Length of the trained encoder's statistics a new kind is placed on (router/trained.py: ``STATISTICS_DIM``)."""
TRAINED_POOLED_DIM_BEFORE_EXTREMES = 512
"""Their length before the channel extremes joined them: such a row reads the first 512 alone, so it is read with
zeros for the extremes and routes as it did."""
EMBEDDING_SPACES = ("d", "pooled")
"""The degradation-aware encoder trained here (router/trained.py); its weights ship in the bank folder."""


@dataclass
class EncoderSpec:
    """The frozen image encoder and the feature it gives the router (see router/encoder.py)."""

    name: str = "efficientnet-lite0"
    blocks: list[int] = field(default_factory=lambda: [0, 1, 3, 5, 8])
    crop: int = 224
    crops: int = 4
    """Crops per image (the centre and corners), or the least on the grid of ``grid_crops``."""
    grid_crops: int = 12
    """> 0: crops on a grid over the whole image, one per two crop areas, at most this many, so a large
    photo is seen all over (router/encoder.py:grid_boxes); 0: ``crops`` at the centre and corners.
    Manifests written before it existed read as 0."""
    log_std: bool = True
    """Log of each channel's std (degradations scale activations multiplicatively)."""
    highpass_sigma: float = 1.5
    """> 0: also encode the image's high-pass residual (image - Gaussian blur of this sigma); 0: off."""
    peak: bool = False
    """Also how far each channel's strongest response stands out of its crop ((max - mean) / std), for
    sparse, local damage (raindrops, flakes, dots) that hardly moves a spatial mean. Measured and not
    shipped (docs/router.md: better on whole photos, worse on crops and on the unknown warning)."""
    statistics: bool = True
    """Append the hand-made degradation statistics of router/statistics.py (spectrum, blockiness,
    noise level, tone, layout, impulses). Manifests written before it existed read as false."""
    dim: int = 0
    feature_mean: list[float] = field(default_factory=list)
    feature_std: list[float] = field(default_factory=list)
    file: str = ""
    """The trained encoder's weights in the bank folder (safetensors); empty for the frozen ImageNet encoder."""
    sha256: str = ""
    """sha256 of ``file``: the embeddings B belong to these exact weights."""
    base: str = ""
    """The pretrained network ``file`` was fine-tuned from."""

    @property
    def trained(self) -> bool:
        return self.name == TRAINED_ENCODER


@dataclass
class RouterDefaults:
    top_k: int = 2
    temperature: float = 0.05
    normalisation: str = "softmax"
    unknown_threshold: float | None = None
    """Best cosine below this means no LoRA fits (calibrated on the validation split)."""
    unknown_embedding: list[float] | None = None
    """Unit embedding of the "unknown" class (outlier exposure, router/outliers.py); null: not fitted."""
    unknown_margin: float | None = None
    """cos(d, unknown) - best cos(d, B_i) above this also means unknown (calibrated like the threshold)."""
    unknown_subspace: str | None = None
    """Orthonormal rows [rank, dim] spanning most of the standardised features of the kinds the router was
    fitted on, as base64 of little-endian float32 (``encode_matrix``): as a JSON list of numbers the
    matrix would dominate the time to read and hash a manifest; null: no residual test (see
    router.router.subspace_residual)."""
    unknown_residual: float | None = None
    """A residual outside that subspace above this also means unknown (calibrated like the threshold)."""
    unknown_strength: float = 0.5
    """Composer's scale of the router weights when the degradation is unknown (0 = input, 1 = full)."""
    confidence_full: float | None = None
    """Presence routers (similarity logit): the damage presence at and above which the restore gets its full
    strength; below, the strength ramps down to 0 at ``confidence_floor``, so an unsure router leaves the photo
    close to its input. None: off."""
    confidence_floor: float | None = None
    """Presence routers: the damage presence at and below which the restore returns the image unchanged; from it
    to ``confidence_full`` the strength ramps linearly from 0 to 1. None: 0 (the ramp starts at no presence)."""
    follower_floor: float | None = None
    """Presence routers: a kind kept after the strongest one needs at least this presence, else it gets no weight
    (a weak second kind is more often a false alarm than damage, and a false one costs more than a missed one);
    None: off."""
    doubt_temperature: float | None = None
    """Presence routers: a kept kind that the router doubts (presence below ½, s_o < 0) weighs σ(s_o / (T ×
    doubt_temperature)) instead of σ(s_o / T), so below ½ a weight falls faster than the presence: such a kind is
    more often a false alarm than damage (router.normalise_top_k). None: off."""
    reread_floor: float | None = None
    """Presence routers: with a kind restored before another's global stage (``LoraEntry.restored_before``), the image
    that kind's pass gives is routed again, and each global kind the composition keeps at this weight or more takes
    the larger of its two weights, with the severity of the reading that gave it: the haze or dark that noise hid
    from the encoder shows once the noise is gone. A global kind kept below it stays as it was, since a second
    reading of a denoised photo also makes sure of a weak false haze (docs/engine.md). None: off."""
    full_stage_from: float | None = None
    """Presence routers, with ``reread_floor``: a global kind that the second reading leaves at this weight or more
    runs its stage at weight 1. A presence is how sure the router is, not how much of the damage there is, and
    noise lowers it: a dehazing blended at 0.6 leaves 40 % of a haze that the router is sure of (docs/engine.md,
    *A sure global kind runs in full after noise's pass*). None: off."""
    masking_kinds: list[str] = field(default_factory=list)
    """Presence routers: beside one of these as the strongest kind, a weak second kind is kept all the same: damage
    that hides other damage from the encoder (noise lowers the presence of haze and low light under it)."""
    similarity: str = "cosine"
    """How s_o = d·B is formed (``SIMILARITIES``); the trained encoder's d already ends in 1 and is a logit."""
    calibration: dict[str, Any] = field(default_factory=dict)
    """How train-router fitted the above: data, seed, validation accuracy, false-alarm rate."""
    examples: str = ""
    """Presence routers: a *.safetensors file in the bank folder with a sample of the examples the heads were
    fitted on (standardised features and their kinds), against which `bank add` places a new kind; empty: none."""
    whole_view_kinds: list[str] = field(default_factory=list)
    """Presence routers: kinds of damage that cover the whole image (haze) and that a small view of the whole image
    must confirm: their s_o is the lower of the crops' and that of the image downscaled to ``whole_view_side``
    (router.whole_view). Blur lowers local contrast the way haze does, and the small view no longer shows it;
    haze survives downscaling. Names not in the bank are ignored; empty: off."""
    whole_view_side: int = WHOLE_VIEW_SIDE
    """The short side in px of that view."""
    exposure_kinds: list[str] = field(default_factory=list)
    """Presence routers: kinds of damage that under-expose the photo (low light) and that its highlights must
    confirm: the presence is multiplied by a ramp of the photo's under-exposure (global_stage.underexposure_stops),
    0 at ``exposure_stops[0]`` and 1 from ``exposure_stops[1]``. Under-exposure darkens the highlights with the
    rest; a photo that the encoder reads as dark for another reason (blur flattens a dim scene, a night scene keeps
    its lights) has highlights the exposure anchor would barely lift. Names not in the bank are ignored; empty:
    off."""
    exposure_stops: list[float] = field(default_factory=lambda: list(EXPOSURE_STOPS))
    """[from, full]: the ramp's ends in stops."""
    night_sky_kinds: list[str] = field(default_factory=list)
    """Presence routers: kinds of damage that a night sky imitates (snow: the stars; low light: the black; colour cast:
    a sky with no white to judge by): their presence is multiplied by 1 minus how far the photo is a night sky, a dark
    void (black, or a smooth faint glow) with bright points of light (router.night_sky), the ramp of its share of sky
    between ``night_sky_void`` times that of its points' level between ``night_sky_points``. Names not in the bank
    are ignored; empty: off."""
    night_sky_void: list[float] = field(default_factory=lambda: list(NIGHT_SKY_VOID))
    """[from, full]: the ramp's ends in share of dark sky."""
    night_sky_points: list[float] = field(default_factory=lambda: list(NIGHT_SKY_POINTS))
    """[from, full]: the ramp's ends in level (0..1) of the brightest points."""
    whole_photo_kinds: list[str] = field(default_factory=list)
    """Presence routers, per-region routing: kinds of damage that belong to the whole photo (a colour cast: the light's
    white point). Where the whole photo reads such a kind below ½, no window's s_o for it is above the photo's: a
    region's own colours (blue water, a green meadow) read as a cast at window scale that the photo does not show.
    Where the photo reads it, each window keeps its own reading. Names not in the bank are ignored; empty: off."""
    photo_wide_kinds: list[str] = field(default_factory=list)
    """Presence routers, per-region routing: kinds of damage that cover the photo once they are there (haze: the air
    between the camera and the scene). Where the whole photo reads such a kind at ½ or more and so do at least
    ``router.spatial.PHOTO_WIDE_SHARE`` of the windows, no window's s_o for it is below the photo's: a flat wall or a
    dark corner under the same haze shows it too faintly at window scale. Where fewer windows read it (haze on part
    of the photo), each window keeps its own reading. Names not in the bank are ignored; empty: off."""
    doubted_beside: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Presence routers: ``{kind: {"kinds": [...], "presence": [from, full]}}``, a kind whose reading other kinds'
    readings put in doubt: its presence is multiplied by 1 minus a ramp of the strongest of those kinds' presence,
    0 up to ``presence[0]`` and 1 from ``presence[1]``. Blur lowers local contrast as haze does, so a blurred pale
    photo reads hazy, and a false dehazing costs far more than a missed one. Names not in the bank are ignored;
    empty: off."""
    alternatives: list[list[str]] = field(default_factory=list)
    """Groups of LoRAs that undo the same damage (Gaussian and Poisson noise): top-K keeps only the strongest
    of a group, at the group's combined weight, so the group takes one place and a mixture's other kind the
    next (router.merge_alternatives). Names not in the bank are ignored; empty: every LoRA competes alone."""


@dataclass
class LoraEntry:
    name: str
    file: str
    rank: int
    alpha: float
    target_modules: list[str]
    embedding: list[float]
    description: str = ""
    conditioning: dict[str, float] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    route_margin: float = 0.0
    """How far this kind's similarity must exceed every other kind's for the router to choose it: the router
    ranks s_o = d·B minus this. 0 for the kinds train-router fits together; `bank add` calibrates it for a kind
    placed later among frozen embeddings, on examples of the other kinds (lab/router/fit.py). Written only
    when not 0, so banks without such a kind keep their manifests as they were."""
    global_stage: str = ""
    """The kind's global adapter (uir_lora/global_stage), a *.safetensors file in the bank folder; "" for a kind
    that is local only. Written only when set."""
    restored_before: list[str] = field(default_factory=list)
    """Kinds with a global stage (low light) whose damage a photo takes before this one (sensor noise after the
    exposure): in a composition beside one of them, this LoRA restores the image before their global stage runs
    (``Composition.in_order``), since brightening multiplies noise left in front of it. Names not in the bank or
    without a global stage are ignored. Written only when set."""
    embedding_of: str = "d"
    """What B is a row over: "d", the encoder's feature (every kind that train-router or the trained encoder's
    presence head placed); "pooled", the trained encoder's pooled block statistics under d and its channel
    extremes, then 1 (their standardisation folded into the row): how `bank add` places a kind the encoder was not
    trained on, whose d the neck, trained on the bank's kinds, often maps near clean or a colour cast
    (docs/your_own_kind.md).
    Written only when not "d"."""
    measured: list[str] = field(default_factory=list)
    """Conditioning values taken from each photo (``Backbone.measure_conditioning``: FFDNet's sigma, the photo's
    own noise level) instead of fixed; the recorded ``conditioning`` value is their ceiling. The LoRA was trained
    on the same measurement (``train-lora --measured-sigma``). Written only when set."""
    coarsest_side: int = 0
    """Run this LoRA coarse-to-fine (``sampler.multiscale``): the composed backbone also on halved copies of the
    photo, as many as keep the shorter side at or above this many pixels, each giving the band of detail its scale
    sees best, so damage wider than the backbone's window (a raindrop 20-40 px across on a 512 px photo) is seen
    whole. A pass runs so only when every LoRA in it asks (the largest side decides); 0: flat. Written only when
    set."""


@dataclass
class Manifest:
    name: str
    backbone_family: str
    backbone_fingerprint: str
    encoder: EncoderSpec
    loras: list[LoraEntry]
    router: RouterDefaults = field(default_factory=RouterDefaults)
    description: str = ""
    format_version: int = FORMAT_VERSION

    def lora(self, name: str) -> LoraEntry:
        for entry in self.loras:
            if entry.name == name:
                return entry
        raise BankError(f"bank {self.name!r} has no LoRA {name!r}; it has: {', '.join(self.names)}")

    @property
    def names(self) -> list[str]:
        return [entry.name for entry in self.loras]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for entry in data["loras"]:
            if entry["route_margin"] == 0:
                del entry["route_margin"]
            if not entry["global_stage"]:
                del entry["global_stage"]
            if not entry["restored_before"]:
                del entry["restored_before"]
            if not entry["measured"]:
                del entry["measured"]
            if not entry["coarsest_side"]:
                del entry["coarsest_side"]
            if entry["embedding_of"] == "d":
                del entry["embedding_of"]
        if data["router"]["similarity"] == "cosine":  # the default: manifests written before it keep their bytes
            del data["router"]["similarity"]
        for optional in ("examples", "alternatives", "follower_floor", "masking_kinds", "confidence_floor",
                         "whole_view_kinds", "doubt_temperature", "exposure_kinds", "doubted_beside",
                         "night_sky_kinds", "whole_photo_kinds", "photo_wide_kinds", "reread_floor",
                         "full_stage_from"):
            if not data["router"][optional]:  # empty: manifests written before them keep their bytes
                del data["router"][optional]
        if data["router"]["whole_view_side"] == WHOLE_VIEW_SIDE:
            del data["router"]["whole_view_side"]
        if tuple(data["router"]["exposure_stops"]) == EXPOSURE_STOPS:
            del data["router"]["exposure_stops"]
        for ends, default in (("night_sky_void", NIGHT_SKY_VOID), ("night_sky_points", NIGHT_SKY_POINTS)):
            if tuple(data["router"][ends]) == default:
                del data["router"][ends]
        return data


def _require(data: dict, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise BankError(f"{where}: missing key {key!r}")
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise BankError(f"{where}: {key!r} must be {getattr(kind, '__name__', kind)}, got {type(value).__name__}")
    return value


def _plain_name(value: str, key: str, where: str) -> str:
    """A name shown to users and used in keys: non-empty, no control characters, at most 255 bytes."""
    if not value.strip() or CONTROL_CHARACTERS.search(value) or len(value.encode("utf-8")) > MAX_TEXT_BYTES:
        raise BankError(f"{where}: {key} must be a non-empty name of at most {MAX_TEXT_BYTES} bytes without control "
                        f"characters (newlines, tabs, escapes), got {value[:80]!r}")
    return value


def _description(data: dict, where: str) -> str:
    """Free text printed to terminals: line breaks and tabs are fine, other control characters
    (terminal escape sequences among them) are refused."""
    text = str(data.get("description", ""))
    if CONTROL_CHARACTERS.search(text.replace("\n", "").replace("\t", "")):
        raise BankError(f"{where}: description holds control characters other than line breaks and tabs; "
                        f"remove them from the manifest")
    return text


def _bounded_int(text: str) -> int:
    """json.loads' parse_int: refuse integers too long to be a real manifest value."""
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise BankError(f"an integer of {len(text)} digits ({text[:12]}...) is far too large for a manifest value; "
                        f"the manifest is damaged")
    return int(text)


def _check_nesting(data: Any, where: str) -> None:
    """Refuse JSON nested deeper than MAX_NESTING, walking it without recursion."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_NESTING:
                raise BankError(f"{where}: JSON nested more than {MAX_NESTING} levels deep; the manifest is damaged")
            stack.extend((item, depth + 1) for item in (value.values() if isinstance(value, dict) else value))


def _pooled_row(values: Any, where: str) -> list[float]:
    """A row over the trained encoder's statistics and 1; one written before the channel extremes joined them gets
    zeros for them (``TRAINED_POOLED_DIM_BEFORE_EXTREMES``), so it scores as it did."""
    if isinstance(values, list) and len(values) == TRAINED_POOLED_DIM_BEFORE_EXTREMES + 1:
        values = values[:-1] + [0.0] * (TRAINED_POOLED_DIM - TRAINED_POOLED_DIM_BEFORE_EXTREMES) + values[-1:]
    return _finite_vector(values, where, TRAINED_POOLED_DIM + 1)


def _finite_vector(values: Any, where: str, dim: int | None = None) -> list[float]:
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               for v in values):
        raise BankError(f"{where}: must be a list of numbers")
    try:
        finite = all(math.isfinite(v) for v in values)
    except OverflowError:  # an int beyond float range
        finite = False
    if not finite:
        raise BankError(f"{where}: contains NaN or Inf (or a number beyond float range)")
    if dim is not None and len(values) != dim:
        raise BankError(f"{where}: has {len(values)} numbers, the encoder gives {dim}; re-run "
                        f"`uir-lora train-router` or `uir-lora bank add` for this bank")
    return [float(v) for v in values]


def _object(data: dict, key: str, where: str) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise BankError(f"{where}: {key} must be an object, got {type(value).__name__}")
    return dict(value)


def _check_number(value: Any, ok: bool, what: str, where: str) -> None:
    """Raise unless ``value`` is a real number (not bool) for which ``ok`` holds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok:
        raise BankError(f"{where}: {what}, got {value!r}")


def _check_specs(encoder: EncoderSpec, router: RouterDefaults, where: str) -> None:
    """Types and ranges of the encoder and router fields (the dataclasses do not check them)."""
    if not isinstance(encoder.name, str):
        raise BankError(f"{where}: encoder.name must be a string, got {encoder.name!r}")
    blocks = encoder.blocks
    if not isinstance(blocks, list) or not blocks or not all(
        isinstance(b, int) and not isinstance(b, bool) and b in ENCODER_BLOCKS for b in blocks
    ):
        raise BankError(f"{where}: encoder.blocks must be a non-empty list of block numbers in 0..10, got {blocks!r}")
    for key, low, high in (("dim", 1, 1 << 16), ("crop", 32, 4096), ("crops", 1, 5), ("grid_crops", 0, 64)):
        value = getattr(encoder, key)
        _check_number(value, isinstance(value, int) and low <= value <= high,
                      f"encoder.{key} must be a whole number in [{low}, {high}]", where)
    _check_number(router.top_k, isinstance(router.top_k, int) and 1 <= router.top_k <= 64,
                  "router.top_k must be a whole number in [1, 64]", where)
    temperature = router.temperature
    _check_number(temperature, isinstance(temperature, (int, float))
                  and TEMPERATURE_RANGE[0] <= temperature <= TEMPERATURE_RANGE[1],
                  "router.temperature must be a number in [{:g}, {:g}]".format(*TEMPERATURE_RANGE), where)
    if router.normalisation not in NORMALISATIONS:
        raise BankError(f"{where}: router.normalisation must be one of {NORMALISATIONS}, got {router.normalisation!r}")
    if router.similarity not in SIMILARITIES:
        raise BankError(f"{where}: router.similarity must be one of {SIMILARITIES}, got {router.similarity!r}")
    for flag in ("log_std", "peak", "statistics"):
        if not isinstance(getattr(encoder, flag), bool):
            raise BankError(f"{where}: encoder.{flag} must be true or false, got {getattr(encoder, flag)!r}")
    _check_number(encoder.highpass_sigma, isinstance(encoder.highpass_sigma, (int, float))
                  and 0 <= encoder.highpass_sigma <= 8, "encoder.highpass_sigma must be a number in [0, 8]", where)
    _check_number(router.unknown_strength, isinstance(router.unknown_strength, (int, float))
                  and 0 <= router.unknown_strength <= 1, "router.unknown_strength must be a number in [0, 1]", where)
    if not isinstance(router.calibration, dict):
        raise BankError(f"{where}: router.calibration must be an object, got {type(router.calibration).__name__}")
    threshold = router.unknown_threshold
    if threshold is not None:
        _check_number(threshold, isinstance(threshold, (int, float)) and -1 <= threshold <= 1,
                      "router.unknown_threshold must be null or a cosine in [-1, 1]", where)
    margin = router.unknown_margin
    if margin is not None:
        _check_number(margin, isinstance(margin, (int, float)) and -2 <= margin <= 2,
                      "router.unknown_margin must be null or a number in [-2, 2]", where)
    residual = router.unknown_residual
    if residual is not None:
        _check_number(residual, isinstance(residual, (int, float)) and 0 <= residual <= 1,
                      "router.unknown_residual must be null or a number in [0, 1]", where)


def _check_trained(encoder: EncoderSpec, router: RouterDefaults, where: str) -> None:
    """The trained encoder's file, hash and (unused) standardisation; the confidence scale."""
    for key in ("file", "sha256", "base"):
        if not isinstance(getattr(encoder, key), str):
            raise BankError(f"{where}: encoder.{key} must be a string, got {getattr(encoder, key)!r}")
    if encoder.trained:
        if not FILE_PATTERN.match(encoder.file) or not re.fullmatch(r"[0-9a-f]{64}", encoder.sha256):
            raise BankError(f"{where}: the trained encoder needs encoder.file (a .safetensors name in the bank "
                            f"folder) and its sha256; re-run `uir-lora encoder install` for this bank")
        if encoder.feature_mean or encoder.feature_std:
            raise BankError(f"{where}: the trained encoder takes no feature_mean / feature_std; leave them empty")
    elif encoder.file:
        raise BankError(f"{where}: encoder.file is only for the {TRAINED_ENCODER!r} encoder")
    full = router.confidence_full
    if full is not None:
        _check_number(full, isinstance(full, (int, float)) and 0 < full <= 1,
                      "router.confidence_full must be null or a number in (0, 1]", where)
    low = router.confidence_floor
    if low is not None:
        _check_number(low, isinstance(low, (int, float)) and full is not None and 0 <= low < full,
                      "router.confidence_floor must be null or a number from 0 to below router.confidence_full "
                      "(which must be set)", where)
    floor = router.follower_floor
    if floor is not None:
        _check_number(floor, isinstance(floor, (int, float)) and 0 < floor <= 1,
                      "router.follower_floor must be null or a number in (0, 1]", where)
    reread = router.reread_floor
    if reread is not None:
        _check_number(reread, isinstance(reread, (int, float)) and 0 < reread <= 1,
                      "router.reread_floor must be null or a number in (0, 1]", where)
    in_full = router.full_stage_from
    if in_full is not None:
        _check_number(in_full, isinstance(in_full, (int, float)) and reread is not None and reread <= in_full <= 1,
                      "router.full_stage_from must be null or a number from router.reread_floor (which must be "
                      "set) to 1", where)
    _names(router.masking_kinds, "router.masking_kinds", where)
    doubt = router.doubt_temperature
    if doubt is not None:
        _check_number(doubt, isinstance(doubt, (int, float)) and 0 < doubt <= 1,
                      "router.doubt_temperature must be null or a number in (0, 1]", where)
    _names(router.whole_view_kinds, "router.whole_view_kinds", where)
    side = router.whole_view_side
    _check_number(side, isinstance(side, int) and not isinstance(side, bool)
                  and WHOLE_VIEW_RANGE[0] <= side <= WHOLE_VIEW_RANGE[1],
                  f"router.whole_view_side must be a whole number of px in [{WHOLE_VIEW_RANGE[0]}, "
                  f"{WHOLE_VIEW_RANGE[1]}]", where)
    _names(router.exposure_kinds, "router.exposure_kinds", where)
    stops = router.exposure_stops
    low, high = EXPOSURE_RANGE
    if not _is_ramp(stops, low, high):
        raise BankError(f"{where}: router.exposure_stops must be two numbers of stops in [{low}, {high}], the first "
                        f"below the second (default {list(EXPOSURE_STOPS)}), got {stops!r}")
    _names(router.night_sky_kinds, "router.night_sky_kinds", where)
    _names(router.whole_photo_kinds, "router.whole_photo_kinds", where)
    _names(router.photo_wide_kinds, "router.photo_wide_kinds", where)
    for ends, default in (("night_sky_void", NIGHT_SKY_VOID), ("night_sky_points", NIGHT_SKY_POINTS)):
        if not _is_ramp(getattr(router, ends), 0, 1):
            raise BankError(f"{where}: router.{ends} must be two numbers in [0, 1], the first below the second "
                            f"(default {list(default)}), got {getattr(router, ends)!r}")
    _check_doubts(router.doubted_beside, where)


def _is_ramp(ends: Any, low: float, high: float) -> bool:
    """Whether ``ends`` is a ramp's [from, full]: two real numbers (not bools) within [low, high], the first below."""
    return (isinstance(ends, list) and len(ends) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and low <= v <= high for v in ends)
            and ends[0] < ends[1])


def _check_doubts(doubts: Any, where: str) -> None:
    """``router.doubted_beside``: {kind: {"kinds": [names], "presence": [from, full]}}, 0 <= from < full <= 1."""
    expected = ('router.doubted_beside must map a LoRA name to {"kinds": [LoRA names], "presence": [from, full]}, '
                "with 0 <= from < full <= 1")
    if not isinstance(doubts, dict):
        raise BankError(f"{where}: {expected}, got {doubts!r}")
    for name, rule in doubts.items():
        valid = (isinstance(rule, dict) and set(rule) == {"kinds", "presence"} and isinstance(rule["kinds"], list)
                 and all(isinstance(kind, str) for kind in rule["kinds"]) and _is_ramp(rule["presence"], 0, 1))
        if not valid:
            raise BankError(f"{where}: {expected}; {name!r} has {rule!r}")


def _parse_lora(data: Any, index: int, dim: int, margin_limit: float, trained: bool) -> LoraEntry:
    where = f"loras[{index}]"
    if not isinstance(data, dict):
        raise BankError(f"{where}: must be an object")
    name = _require(data, "name", str, where)
    if not NAME_PATTERN.fullmatch(name):
        raise BankError(f"{where}: name {name!r} must match {NAME_PATTERN.pattern}")
    where = f"LoRA {name!r}"
    file = _require(data, "file", str, where)
    if not FILE_PATTERN.fullmatch(file):
        raise BankError(f"{where}: file {file!r} must be a plain *.safetensors name inside the bank folder")
    rank = _require(data, "rank", int, where)
    alpha = _require(data, "alpha", (int, float), where)
    if not 1 <= rank <= 1024 or not 0 < alpha <= 4096:
        raise BankError(f"{where}: rank must be in [1, 1024] and alpha in (0, 4096], got {rank}, {alpha}")
    targets = _require(data, "target_modules", list, where)
    if not targets or not all(isinstance(t, str) and t and not CONTROL_CHARACTERS.search(t) for t in targets):
        raise BankError(f"{where}: target_modules must be a non-empty list of module names (no control characters)")
    conditioning = data.get("conditioning", {})
    if not isinstance(conditioning, dict) or not all(NAME_PATTERN.fullmatch(key) for key in conditioning):
        raise BankError(f"{where}: conditioning must be an object of numbers keyed by plain lowercase names")
    space = data.get("embedding_of", "d")
    if space not in EMBEDDING_SPACES or (space == "pooled" and not trained):
        raise BankError(f"{where}: embedding_of must be \"d\" or, with the {TRAINED_ENCODER!r} encoder, \"pooled\"; "
                        f"got {space!r}: place the kind again with `uir-lora bank add`")
    return LoraEntry(
        name=name, file=file, rank=rank, alpha=float(alpha), target_modules=list(targets),
        embedding=_pooled_row(_require(data, "embedding", list, where), f"{where} embedding") if space == "pooled"
        else _finite_vector(_require(data, "embedding", list, where), f"{where} embedding", dim),
        embedding_of=space,
        description=_description(data, where),
        conditioning=dict(zip(conditioning, _finite_vector(list(conditioning.values()), f"{where} conditioning"))),
        provenance=_object(data, "provenance", where), validation=_object(data, "validation", where),
        route_margin=_route_margin(data.get("route_margin", 0.0), margin_limit, where),
        global_stage=_bank_file_name(data.get("global_stage", ""), "global_stage", where),
        restored_before=_names(data.get("restored_before", []), "restored_before", where),
        measured=_measured(data.get("measured", []), conditioning, where),
        coarsest_side=_coarsest_side(data.get("coarsest_side", 0), where),
    )


def _coarsest_side(value: Any, where: str) -> int:
    """A LoRA's ``coarsest_side``: 0 (flat) or a whole number of pixels from ``MIN_COARSEST_SIDE`` up."""
    whole = isinstance(value, int) and not isinstance(value, bool)
    if not (whole and (value == 0 or MIN_COARSEST_SIDE <= value <= MAX_COARSEST_SIDE)):
        raise BankError(f"{where}: coarsest_side must be 0 (run flat) or a whole number of pixels from "
                        f"{MIN_COARSEST_SIDE} to {MAX_COARSEST_SIDE}, got {value!r}")
    return value


def _measured(value: Any, conditioning: dict, where: str) -> list[str]:
    """A LoRA's measured conditioning keys: each one must be recorded too (its ceiling)."""
    if not isinstance(value, list) or not all(isinstance(key, str) for key in value):
        raise BankError(f"{where}: measured must be a list of conditioning names, got {value!r}")
    unrecorded = [key for key in value if key not in conditioning]
    if unrecorded:
        raise BankError(f"{where}: measured names {unrecorded} that conditioning does not record; record each "
                        f"one's ceiling in conditioning (e.g. \"sigma\": 0.294)")
    return list(value)


def _names(value: Any, key: str, where: str) -> list[str]:
    """A list of LoRA names (the router's kind lists, a LoRA's ``restored_before``), or a BankError naming ``key``."""
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise BankError(f"{where}: {key} must be a list of LoRA names, got {value!r}")
    return list(value)


def _bank_file_name(value: Any, key: str, where: str) -> str:
    """An optional file of the bank: empty, or a plain *.safetensors name inside the bank folder."""
    if value == "":
        return ""
    if not isinstance(value, str) or not FILE_PATTERN.fullmatch(value):
        raise BankError(f"{where}: {key} {value!r} must be a plain *.safetensors name inside the bank folder")
    return value


def _route_margin(value: Any, limit: float, where: str) -> float:
    _check_number(value, isinstance(value, (int, float)) and 0 <= value <= limit,
                  f"route_margin must be a number in [0, {limit:g}] (a difference of "
                  f"{'cosines' if limit == COSINE_MARGIN_LIMIT else 'presence logits'})", where)
    return float(value)


def parse_manifest(data: Any, source: str = "manifest") -> Manifest:
    """Validate a manifest's JSON object; raise BankError naming the first problem."""
    if not isinstance(data, dict):
        raise BankError(f"{source}: must be a JSON object")
    _check_nesting(data, source)
    version = _require(data, "format_version", int, source)
    if version != FORMAT_VERSION:
        raise BankError(f"{source}: format_version {version} is not supported (this pack reads "
                        f"{FORMAT_VERSION}); update the pack or re-export the bank")
    backbone = _plain_name(_require(data, "backbone_family", str, source), "backbone_family", source)
    encoder_data = _require(data, "encoder", dict, source)
    for added, before in (("peak", False), ("statistics", False), ("grid_crops", 0)):  # banks fitted before
        encoder_data.setdefault(added, before)
    try:
        encoder = EncoderSpec(**encoder_data)
    except TypeError as exc:
        raise BankError(f"{source}: encoder has unknown or missing fields ({exc})") from None
    try:
        router = RouterDefaults(**data.get("router", {}))
    except TypeError as exc:
        raise BankError(f"{source}: router has unknown fields ({exc})") from None
    _check_specs(encoder, router, source)
    _check_trained(encoder, router, source)
    _bank_file_name(router.examples, "router.examples", source)
    _check_alternatives(router.alternatives, source)
    for key in ("feature_mean", "feature_std"):
        if encoder.trained:  # its d is used as it is
            continue
        setattr(encoder, key, _finite_vector(getattr(encoder, key), f"{source} encoder.{key}", encoder.dim))
    if router.unknown_embedding is not None:
        router.unknown_embedding = _finite_vector(router.unknown_embedding, f"{source} router.unknown_embedding",
                                                  encoder.dim)
    if router.unknown_subspace is not None:
        decode_matrix(router.unknown_subspace, encoder.dim, f"{source} router.unknown_subspace")
    if not encoder.trained and min(encoder.feature_std) < 1e-12:  # tinier values overflow the standardised features
        raise BankError(f"{source}: encoder.feature_std must be >= 1e-12; re-run `uir-lora train-router`")
    loras_data = _require(data, "loras", list, source)
    margin_limit = LOGIT_MARGIN_LIMIT if presence_logit(encoder, router) else COSINE_MARGIN_LIMIT
    loras = [_parse_lora(item, i, embedding_dim(encoder, router), margin_limit, encoder.trained)
             for i, item in enumerate(loras_data)]
    if len({entry.name for entry in loras}) != len(loras):
        raise BankError(f"{source}: LoRA names must be unique")
    return Manifest(
        name=_plain_name(_require(data, "name", str, source), "name", source), backbone_family=backbone,
        backbone_fingerprint=_require(data, "backbone_fingerprint", str, source),
        encoder=encoder, loras=loras, router=router, description=_description(data, source),
        format_version=version,
    )


def _check_alternatives(groups: Any, where: str) -> None:
    """router.alternatives: a list of groups of two or more LoRA names, each name in one group at most."""
    shape = ("router.alternatives must be a list of groups of two or more LoRA names, "
             'e.g. [["noise", "poisson_noise"]]')
    if not isinstance(groups, list) or not all(isinstance(group, list) and len(group) >= 2 for group in groups):
        raise BankError(f"{where}: {shape}, got {groups!r}")
    seen: set[str] = set()
    for group in groups:
        for name in group:
            if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
                raise BankError(f"{where}: router.alternatives: {name!r} is not a LoRA name ({shape})")
            if name in seen:
                raise BankError(f"{where}: router.alternatives names {name!r} twice; each LoRA may be in one group")
            seen.add(name)


def presence_logit(encoder: EncoderSpec, router: RouterDefaults) -> bool:
    """Whether s_o is a presence logit (the trained encoder, or presence heads on the frozen one), not a cosine."""
    return encoder.trained or router.similarity == "logit"


def embedding_dim(encoder: EncoderSpec, router: RouterDefaults) -> int:
    """Length of each LoRA's B: the feature's, plus the bias of a presence logit over the frozen encoder
    (the trained encoder's feature already ends in its constant 1)."""
    return encoder.dim + (presence_logit(encoder, router) and not encoder.trained)


UNSET_BIAS = -20.0
"""Bias of a presence row not yet placed (a kind with no head): presence ~0 until `bank add` places it."""


def placeholder_embedding(encoder: EncoderSpec, router: RouterDefaults) -> list[float]:
    """B of a LoRA the router has not placed yet: zeros for a cosine router (similarity 0), a presence row
    of presence ~0 for a logit router (a zero row would be a logit of 0, presence one half)."""
    dim = embedding_dim(encoder, router)
    if presence_logit(encoder, router):
        return [0.0] * (dim - 1) + [UNSET_BIAS]
    return [0.0] * dim


def encode_matrix(matrix: torch.Tensor) -> str:
    """[rows, dim] -> base64 of its little-endian float32 bytes (see RouterDefaults.unknown_subspace)."""
    return base64.b64encode(matrix.detach().float().contiguous().numpy().astype("<f4").tobytes()).decode("ascii")


def decode_matrix(text: Any, dim: int, where: str) -> torch.Tensor:
    """``encode_matrix``'s string -> [rows, dim] float32, 1 <= rows <= dim, finite; BankError otherwise."""
    if not isinstance(text, str):
        raise BankError(f"{where}: must be null or a base64 string of float32 rows, got {type(text).__name__}")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise BankError(f"{where}: not valid base64 ({exc}); re-run `uir-lora train-router`") from None
    rows, leftover = divmod(len(raw), 4 * dim)
    if leftover or not 1 <= rows <= dim:
        raise BankError(f"{where}: {len(raw)} bytes are not 1..{dim} float32 rows of {dim} numbers; "
                        f"re-run `uir-lora train-router` for this bank")
    matrix = torch.from_numpy(np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(rows, dim))
    if not torch.isfinite(matrix).all():
        raise BankError(f"{where}: contains NaN or Inf")
    return matrix


def read_manifest(bank_dir: str | Path) -> Manifest:
    path = Path(bank_dir) / MANIFEST_NAME
    if not path.is_file():
        raise BankError(f"no {MANIFEST_NAME} in {bank_dir}; a bank is a folder with {MANIFEST_NAME} "
                        f"and one .safetensors file per LoRA")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise BankError(f"{path}: {path.stat().st_size >> 20} MB is far too large for a manifest "
                        f"(limit {MAX_MANIFEST_BYTES >> 20} MB); the bank is damaged or not a UIR-LoRA bank")
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_int=_bounded_int)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise BankError(f"{path}: not valid JSON ({exc}); the manifest is damaged") from exc
    except OSError as exc:
        raise BankError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    return parse_manifest(data, str(path))


def write_manifest(manifest: Manifest, bank_dir: str | Path) -> Path:
    """Validate, then write atomically (temp file + rename), so a crash never leaves half a file."""
    data = manifest.to_json()
    parse_manifest(json.loads(json.dumps(data)), "manifest to write")
    bank_dir = Path(bank_dir)
    bank_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=bank_dir, suffix=".tmp", delete=False, encoding="utf-8") as tmp:
        try:
            json.dump(data, tmp, indent=1)
            tmp.write("\n")
        except BaseException:
            tmp.close()
            os.unlink(tmp.name)
            raise
    give_default_mode(tmp.name)
    os.replace(tmp.name, bank_dir / MANIFEST_NAME)
    return bank_dir / MANIFEST_NAME
