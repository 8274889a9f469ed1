"""Per-region routing: the router run on overlapping windows, turned into smooth weight maps.

An image damaged differently in different places (haze on the left, noise on the right) gets one
averaged composition from global routing, which fits neither side. Here the router sees windows at
native resolution (the encoder's features are pixel statistics, so no resize), every window gets
its own top-K weights, and each window's weights are spread over its pixels with a raised-cosine
(Hann) footprint; overlapping footprints are averaged, which gives maps that change smoothly
between window centres and still sum to 1 at every pixel.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import TEMPERATURE_RANGE, InputError, check_int, check_range
from ..images import tile_starts
from .router import Router, RoutingResult, presence_confidence, unknown_mask
from .trained import CLEAN

DEFAULT_WINDOW = 192
WINDOW_RANGE = (64, 4096)
"""The per-region window sizes in px that routing accepts, inclusive."""
MAP_SCALE = 8
"""Weight maps are kept at 1/8 resolution: they are smooth, and 12 full-size maps of a 4K photo
would take ~400 MB."""
ENCODER_BATCH = 16
PHOTO_WIDE_SHARE = 0.75
"""The share of windows that must read a photo-wide kind (``RouterDefaults.photo_wide_kinds``) for the others to
take the whole photo's reading: most of the photo, so damage on one part of it (a hazy half) stays where it is."""


@dataclass
class RegionWeights:
    """Per-window routing of one image and its smooth per-pixel weight maps (at 1/MAP_SCALE)."""

    names: list[str]
    similarities: torch.Tensor
    """[N, rows, cols]: cosine of each window to each LoRA embedding."""
    weights: torch.Tensor
    """[N, rows, cols]: each window's kept, normalised weights."""
    maps: torch.Tensor
    """[N, h, w]: per-pixel weights at 1/MAP_SCALE resolution, summing to 1 where any window routed."""
    size: tuple[int, int]
    """(H, W) of the image the maps describe."""
    window: int
    stride: int
    top_k: int
    temperature: float
    normalisation: str
    unknown_threshold: float | None = None
    unknown_similarities: torch.Tensor | None = None
    """[rows, cols]: cosine of each window to the bank's "unknown" embedding (None: the bank has none)."""
    unknown_margin: float | None = None
    residuals: torch.Tensor | None = None
    """[rows, cols]: each window's residual outside the bank's known-kinds subspace (None: no such test)."""
    residual_threshold: float | None = None
    severities: dict[str, torch.Tensor] = field(default_factory=dict)
    """Each kind's severity reading (0 mild .. 1 strong) per window [rows, cols], for the kinds the trained encoder
    reads; empty otherwise."""
    notes: tuple[str, ...] = ()
    """What the bank's rules took from the windows (``RouterDefaults.whole_photo_kinds``), for the restore's summary."""
    _sim_maps: torch.Tensor | None = field(default=None, init=False, repr=False)

    def full_maps(self) -> torch.Tensor:
        """[N, H, W] weight maps at the image's resolution (bilinear upsampling of the smooth maps)."""
        return full_size(self.maps, self.size)

    def spread_full(self, values: torch.Tensor) -> torch.Tensor:
        """[N, rows, cols] per-window values -> [N, H, W], spread like the weight maps, at the image's resolution."""
        return full_size(spread(values, self.size, self.window, self.stride), self.size)

    def region(self, box: tuple[int, int, int, int]) -> RoutingResult:
        """The routing for pixels ``(y0, y1, x0, x1)``: maps and similarities averaged over the box."""
        y0, y1, x0, x1 = box
        height, width = self.size
        sy, sx = self.maps.shape[-2] / height, self.maps.shape[-1] / width
        r0, r1 = int(y0 * sy), max(int(y0 * sy) + 1, round(y1 * sy))
        c0, c1 = int(x0 * sx), max(int(x0 * sx) + 1, round(x1 * sx))
        weights = self.maps[:, r0:r1, c0:c1].mean(dim=(1, 2))
        sims = self._similarity_maps()[:, r0:r1, c0:c1].mean(dim=(1, 2))
        return RoutingResult(
            similarities=dict(zip(self.names, sims.tolist())),
            weights={n: w for n, w in zip(self.names, weights.tolist()) if w > 0},
            top_k=self.top_k, temperature=self.temperature, normalisation=self.normalisation,
            unknown_threshold=self.unknown_threshold, notes=[f"per-region routing, box {box}"],
            unknown_similarity=self._mean_in(self.unknown_similarities, box), unknown_margin=self.unknown_margin,
            residual=self._mean_in(self.residuals, box), residual_threshold=self.residual_threshold,
            severities={kind: self._mean_in(grid, box) for kind, grid in self.severities.items()},
        )

    def severity_where(self, kind: str, weight: torch.Tensor) -> float | None:
        """``kind``'s severity reading averaged over the image by ``weight`` [H, W] (where it is applied, and how
        much), or None when the encoder reads none for it or the weight is nowhere."""
        grid = self.severities.get(kind)
        total = float(weight.sum())
        if grid is None or total <= 0:
            return None
        return float((self.spread_full(grid[None])[0] * weight).sum()) / total

    def _mean_in(self, grid: torch.Tensor | None, box: tuple[int, int, int, int]) -> float | None:
        """Mean of a per-window grid over the windows that overlap ``box`` (None stays None)."""
        if grid is None:
            return None
        ys, xs, _ = window_starts(*self.size, self.window)
        y0, y1, x0, x1 = box
        rows = [i for i, y in enumerate(ys) if y < y1 and y + self.window > y0] or [0]
        cols = [j for j, x in enumerate(xs) if x < x1 and x + self.window > x0] or [0]
        return float(grid[rows][:, cols].mean())

    def _similarity_maps(self) -> torch.Tensor:
        if self._sim_maps is None:  # only tile summaries need it; computed once
            self._sim_maps = spread(self.similarities, self.size, self.window, self.stride)
        return self._sim_maps

    def unknown_fraction(self) -> float:
        """Share of windows the bank's unknown tests flag (see RoutingResult.unknown_reason; 0 if none)."""
        best = self.similarities.max(dim=0).values
        flagged = unknown_mask(best, self.unknown_similarities, self.unknown_threshold, self.unknown_margin,
                               self.residuals, self.residual_threshold)
        return float(flagged.float().mean())

    def strongest_damage(self) -> tuple[str, float]:
        """The largest weight any window gives a kind other than clean, and that kind: for a presence router, the
        strongest damage presence anywhere in the image (("none", 0.0) when no window keeps one)."""
        damage = [i for i, name in enumerate(self.names) if name != CLEAN]
        if not damage:
            return "none", 0.0
        peaks = self.weights[damage].flatten(1).amax(dim=1)
        best = int(peaks.argmax())
        return self.names[damage[best]], float(peaks[best])

    def strength_map(self, full: float | None, floor: float | None) -> torch.Tensor:
        """[H, W] do-no-harm strength per pixel: each window's strongest damage presence through the bank's ramp
        (``presence_confidence``), spread over the image like the weight maps, so a window that reads no damage
        it is sure of leaves its pixels close to the input even when another region is restored in full."""
        damage = [i for i, name in enumerate(self.names) if name != CLEAN]
        presence = self.weights[damage].amax(dim=0) if damage else torch.zeros(self.weights.shape[1:])
        ramp = torch.tensor([[presence_confidence(float(p), full, floor) for p in row] for row in presence])
        return self.spread_full(ramp[None])[0]

    def mean_weights(self) -> dict[str, float]:
        """Image-average weight per LoRA (what a one-line summary shows), largest first."""
        mean = self.maps.mean(dim=(1, 2))
        return dict(sorted(((n, float(w)) for n, w in zip(self.names, mean) if w > 1e-3), key=lambda kv: -kv[1]))


def window_starts(height: int, width: int, window: int) -> tuple[list[int], list[int], int]:
    """Window corners on a grid with 50 % overlap (the stride where Hann footprints sum flat)."""
    stride = max(1, window // 2)
    return tile_starts(height, window, window - stride), tile_starts(width, window, window - stride), stride


def full_size(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[N, h, w] smooth maps -> [N, H, W] (bilinear)."""
    return F.interpolate(maps[None], size=size, mode="bilinear", align_corners=False)[0]


@functools.lru_cache(maxsize=16)
def hann(height: int, width: int) -> torch.Tensor:
    """[height, width] raised-cosine footprint, positive everywhere (so no pixel is left at 0/0)."""

    def ramp(n: int) -> torch.Tensor:
        return torch.sin(torch.pi * (torch.arange(n) + 0.5) / n) ** 2

    return (ramp(height)[:, None] * ramp(width)[None, :]).clamp_min(1e-3)


def spread(values: torch.Tensor, size: tuple[int, int], window: int, stride: int) -> torch.Tensor:
    """[N, rows, cols] per-window values -> [N, H/MAP_SCALE, W/MAP_SCALE] Hann-weighted averages."""
    height, width = size
    ys, xs, _ = window_starts(height, width, window)
    win_h, win_w = min(window, height), min(window, width)
    h, w = -(-height // MAP_SCALE), -(-width // MAP_SCALE)
    total = torch.zeros(values.shape[0], h, w)
    norm = torch.zeros(h, w)
    for i, y in enumerate(ys):
        r0, r1 = y // MAP_SCALE, -(-(y + win_h) // MAP_SCALE)  # every map cell the window touches
        for j, x in enumerate(xs):
            c0, c1 = x // MAP_SCALE, -(-(x + win_w) // MAP_SCALE)
            footprint = hann(r1 - r0, c1 - c0)
            total[:, r0:r1, c0:c1] += values[:, i, j, None, None] * footprint
            norm[r0:r1, c0:c1] += footprint
    return total / norm.clamp_min(1e-8)


def estimate_regions(
    router: Router,
    image: torch.Tensor,
    window: int = DEFAULT_WINDOW,
    top_k: int | None = None,
    temperature: float | None = None,
    normalisation: str | None = None,
) -> RegionWeights:
    """Route every overlapping ``window`` x ``window`` crop of ``image`` [1,3,H,W] (batched)."""
    if image.ndim != 4 or image.shape[:2] != (1, 3):
        raise InputError(f"estimate_regions expects one image [1,3,H,W], got {tuple(image.shape)}")
    window = check_int("window", window, *WINDOW_RANGE)
    defaults = router.manifest.router
    top_k = check_int("top_k", defaults.top_k if top_k is None else top_k, 1, max(1, len(router.names)))
    temperature = check_range("temperature", defaults.temperature if temperature is None else temperature,
                              *TEMPERATURE_RANGE)
    normalisation = normalisation or defaults.normalisation
    height, width = image.shape[-2:]
    ys, xs, stride = window_starts(height, width, window)
    win_h, win_w = min(window, height), min(window, width)
    crops = torch.cat([image[..., y : y + win_h, x : x + win_w] for y in ys for x in xs])
    read = [router.scores_and_severities(crops[i : i + ENCODER_BATCH])
            for i in range(0, crops.shape[0], ENCODER_BATCH)]
    scored = [scores for scores, _ in read]
    sims = torch.cat([s.similarities for s in scored])
    notes = whole_photo_rules(router, image, sims)
    unknown = None if router.unknown_embedding is None else torch.cat([s.unknown for s in scored])
    residual = None if router.subspace is None else torch.cat([s.residual for s in scored])
    severities = None if read[0][1] is None else torch.cat([reading for _, reading in read])
    chosen = router.alternative_choice(image)  # a property of the whole photo's noise, not of a region
    chosen = None if chosen is None else chosen.expand(len(sims), -1)
    weights = router.weights(sims, top_k, temperature, normalisation, chosen)
    grid = (len(ys), len(xs))
    sims_grid = sims.T.reshape(-1, *grid)
    weights_grid = weights.T.reshape(-1, *grid)
    return RegionWeights(
        names=list(router.names), similarities=sims_grid, weights=weights_grid,
        maps=spread(weights_grid, (height, width), window, stride), size=(height, width), window=window,
        stride=stride, top_k=top_k, temperature=temperature, normalisation=normalisation,
        unknown_threshold=defaults.unknown_threshold, unknown_margin=defaults.unknown_margin,
        unknown_similarities=None if unknown is None else unknown.reshape(grid),
        residuals=None if residual is None else residual.reshape(grid),
        residual_threshold=defaults.unknown_residual,
        severities={} if severities is None else dict(zip(router.encoder.kinds, severities.T.reshape(-1, *grid))),
        notes=notes,
    )


def whole_photo_rules(router: Router, image: torch.Tensor, sims: torch.Tensor) -> tuple[str, ...]:
    """The bank's rules that weigh the windows' s_o [windows, N] (changed in place) against the whole ``image``'s:
    ``whole_photo_limit`` and ``photo_wide_floor``; their notes. The photo is read once, and only for such a rule."""
    if not (router.whole_photo_index or router.photo_wide_index):
        return ()
    photo = router.scores(image).similarities[0]
    return whole_photo_limit(router, photo, sims) + photo_wide_floor(router, photo, sims)


def photo_wide_floor(router: Router, photo: torch.Tensor, sims: torch.Tensor) -> tuple[str, ...]:
    """Raise in place the windows' s_o of the bank's photo-wide kinds to the whole photo's ``photo`` [N] where the
    photo reads them at ½ or more and so do at least ``PHOTO_WIDE_SHARE`` of the windows
    (``RouterDefaults.photo_wide_kinds``); a note for each kind so given to a window that did not read it."""
    notes = []
    for kind in router.photo_wide_index:
        read = sims[:, kind] >= 0
        share = float(read.float().mean())
        if photo[kind] < 0 or share < PHOTO_WIDE_SHARE:
            continue
        given = ~read & (sims[:, kind] < photo[kind])
        sims[:, kind] = torch.maximum(sims[:, kind], photo[kind])
        if given.any():
            notes.append(f"{router.names[kind]} given to {int(given.sum())} of {len(sims)} windows that did not read "
                         f"it: the whole photo reads it at {float(torch.sigmoid(photo[kind])):.2f} and {share:.0%} of "
                         f"the windows do (the bank's rule: a kind that covers the photo)")
    return tuple(notes)


def whole_photo_limit(router: Router, photo: torch.Tensor, sims: torch.Tensor) -> tuple[str, ...]:
    """Cap in place the windows' s_o [windows, N] of the bank's whole-photo kinds where the whole photo's ``photo``
    [N] reads them below ½ (``RouterDefaults.whole_photo_kinds``); a note for each kind so taken from a window that
    read it."""
    if not router.whole_photo_index:
        return ()
    index = router.whole_photo_index
    photo = photo[index]
    limit = photo.where(photo < 0, torch.inf)
    read = sims[:, index] >= 0
    sims[:, index] = torch.minimum(sims[:, index], limit)
    notes = []
    for column, kind in enumerate(index):
        taken = read[:, column] & (sims[:, kind] < 0)
        if taken.any():
            notes.append(f"{router.names[kind]} left out of {int(taken.sum())} of {len(sims)} windows that read it: "
                         f"the whole photo reads it at {float(torch.sigmoid(photo[column])):.2f} (the bank's rule: "
                         f"a kind of the whole photo)")
    return tuple(notes)


PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40),
           (128, 0, 0), (170, 255, 195), (128, 128, 0), (0, 0, 128))


def region_map_picture(image: torch.Tensor, regions: RegionWeights, max_side: int = 768) -> np.ndarray:
    """HxWx3 uint8: the photo in grey tinted by the weighted mix of LoRA colours, plus a legend.

    The tint is sum_i w_i(p) colour_i, so soft transitions show as blended colours and a region
    given one LoRA shows that LoRA's pure colour; the legend gives each LoRA's image-average weight.
    """
    from PIL import Image, ImageDraw  # display only; the engine's routing needs no PIL

    scale = min(1.0, max_side / max(regions.size))
    size = (max(1, round(regions.size[0] * scale)), max(1, round(regions.size[1] * scale)))
    photo = F.interpolate(image[:1].float(), size=size, mode="area")[0]
    grey = photo.mean(dim=0, keepdim=True)
    maps = F.interpolate(regions.maps[None], size=size, mode="bilinear", align_corners=False)[0]
    colours = torch.tensor([PALETTE[i % len(PALETTE)] for i in range(len(regions.names))], dtype=torch.float32) / 255
    tint = torch.einsum("nhw,nc->chw", maps, colours)
    picture = (0.45 * grey + 0.55 * tint).clamp(0, 1)
    body = Image.fromarray((picture.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    means = regions.mean_weights()
    row = 16
    legend_h = 6 + row * (len(means) + 1)
    canvas = Image.new("RGB", (max(body.width, 260), body.height + legend_h), (30, 30, 30))
    canvas.paste(body, (0, 0))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, body.height + 4), f"per-region weights ({regions.window} px windows), image average:",
              fill=(220, 220, 220))
    for i, (name, weight) in enumerate(means.items()):
        y = body.height + 4 + row * (i + 1)
        colour = PALETTE[regions.names.index(name) % len(PALETTE)]
        draw.rectangle([4, y + 2, 16, y + 12], fill=colour)
        draw.text((22, y + 1), f"{name}  {weight:.2f}", fill=(230, 230, 230))
    unknown = regions.unknown_fraction()
    if unknown > 0:
        draw.text((150, body.height + 4 + row), f"unknown: {unknown:.0%} of windows", fill=(220, 60, 60))
    return np.asarray(canvas)
