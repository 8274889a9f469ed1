"""Per-region restoration: every tile restored with the composition its region's weights ask for.

Choice: per-tile composition, not "restore once per LoRA and blend the outputs with the maps".
The paper composes inside the network, at every adapted layer (x_out = f0(x) + sum s_i f_i(x)); a
pixel-space blend of single-LoRA outputs is a different (output-level) mixture and costs one full
pass per LoRA. Per tile we merge the tile's weights into the backbone (fused; a merge is cheap next
to a pass) and run one pass, so the cost is the global cost plus one merge per tile. Tiles are small
(192 px) so the composition can follow the weight maps; the sampler's raised-cosine overlap
blending hides the tile borders, and neighbouring tiles' weights differ little because the maps are
smooth.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

import torch

from ..backbones.base import Backbone
from ..compose.composer import Composition, composed, measure, raise_global_weights
from ..global_stage import GlobalAdapter, apply_global, thumbnail
from ..router.router import RoutingResult
from ..router.spatial import RegionWeights, window_starts
from .restore import InterruptFn, ProgressFn, SamplerOptions, tile_counter, unchanged
from .tiling import run_tiled, tile_boxes

log = logging.getLogger(__name__)

SPATIAL_TILE = 192
"""Small enough to follow a half-image split within ~1/3 tile; big enough that the 32 px overlap
the backbone needs stays a small share of the work (tiles cost (192/160)^2 = 1.44x the pixels)."""
MIN_WEIGHT = 0.02
"""Tile weights under this are dropped (and the rest rescaled to the same sum): a LoRA that barely
touches a tile is not worth a merge, and this keeps compositions short."""

ComposeFn = Callable[[RoutingResult], Composition]
PassFn = Callable[[RoutingResult], Composition | None]
"""A tile's composition in one pass of the per-region restore; None: the tile is left as it is in that pass."""
ReadFn = Callable[[torch.Tensor], RegionWeights]
"""The per-region routing of an image [1,3,H,W]: how the restore reads the image again after its first pass."""


def prune(result: RoutingResult, floor: float = MIN_WEIGHT) -> RoutingResult:
    """Drop weights below ``floor`` and rescale the others so the total is unchanged."""
    total = sum(result.weights.values())
    kept = {n: w for n, w in result.weights.items() if w >= floor}
    scale = total / sum(kept.values()) if kept else 0.0
    result.weights = {n: w * scale for n, w in kept.items()}
    return result


def global_stage_maps(region: RegionWeights, compose_fn: ComposeFn,
                      read_again: Callable[[], RegionWeights] | None = None
                      ) -> dict[str, tuple[torch.Tensor, GlobalAdapter]]:
    """Each kind with a global adapter that some window keeps: its [H, W] weight map and its adapter. The weights
    are every window's composition (the bank's rules applied as for a tile: a weak second kind left out, unknown
    damage scaled), spread over the image like the router's maps. ``read_again``: the routing of the image after
    the first pass; a window whose composition asks for a second reading (``Composition.reread``, set by
    ``pipeline.compose``) takes the same window of it as the whole-image restore takes its second reading
    (``raise_global_weights``: the larger weight, and 1 from the bank's ``full_stage_from``), where every window
    around it kept the kind at the bank's ``reread_floor``. Read once, and only when some window asks."""
    height, width = region.size
    ys, xs, _ = window_starts(height, width, region.window)
    win_h, win_w = min(region.window, height), min(region.window, width)
    grids: dict[str, torch.Tensor] = {}
    raised: dict[str, torch.Tensor] = {}
    adapters: dict[str, GlobalAdapter | None] = {}
    again: RegionWeights | None = None
    floor = None
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            box = (y, y + win_h, x, x + win_w)
            composition = compose_fn(prune(region.region(box)))
            for name, weight in composition.weights.items():
                if name not in adapters:
                    adapters[name] = composition.bank.global_adapter(name)
                if adapters[name] is not None:
                    grids.setdefault(name, torch.zeros(len(ys), len(xs)))[i, j] = weight
            if composition.reread is not None and read_again is not None:
                if again is None:
                    again = read_again()
                policy = composition.bank.manifest.router
                floor = policy.reread_floor
                second = raise_global_weights(composition, compose_fn(prune(again.region(box))), floor,
                                              policy.full_stage_from)
                for name in composition.staged_kinds():
                    raised.setdefault(name, torch.full((len(ys), len(xs)), float("nan")))[i, j] = second.weights[name]
    for name, grid in raised.items():
        grids[name] = raised_inside(name, grids[name], grid, floor)
    return {name: (region.spread_full(grid[None])[0], adapters[name]) for name, grid in grids.items()}


def raised_inside(name: str, first: torch.Tensor, raised: torch.Tensor, floor: float) -> torch.Tensor:
    """A kind's window weights [rows, cols]: the ``raised`` ones (the second reading's; NaN where a window did not ask)
    inside the region the kind covers, where every window around kept it at ``floor`` in its ``first`` reading, and
    the first reading elsewhere. At a region's edge the presence also says how much of the window the damage covers."""
    around = -torch.nn.functional.max_pool2d(-first[None, None], 3, stride=1, padding=1)[0, 0]
    inside = ~raised.isnan() & (around >= floor)
    changed = inside & (raised != first)
    if changed.any():  # the summary keeps the first reading's weights: say what the stage ran with
        log.info("read again after the first pass: %s raised in %d of %d windows (%.2f -> %.2f on average)", name,
                 int(changed.sum()), raised.numel(), float(first[changed].mean()), float(raised[changed].mean()))
    return torch.where(inside, raised, first)


def regional_global_stage(image: torch.Tensor, region: RegionWeights, compose_fn: ComposeFn,
                          read_again: ReadFn | None = None) -> torch.Tensor:
    """The global stage of a per-region restore, for one image [1,3,H,W]: each kind's adapter reads the part of
    the image where its windows keep it (the box where its map is at least half its peak) and corrects the box
    where it has any weight, blended pixel by pixel by its map. A whole-image adapter fed the image's mean
    weight would read a dark half's exposure from the bright half, and spread one window's weak haze over the
    whole photo; over a uniformly damaged image this is the whole-image stage at the map's weight. ``image``: the
    first pass's output where there was one, which ``read_again`` routes when a window asks (``global_stage_maps``)."""
    out = image.float().clone()
    again = None if read_again is None else (lambda: read_again(image))
    with torch.inference_mode():
        for name, (weight, adapter) in global_stage_maps(region, compose_fn, again).items():
            peak = float(weight.max())
            if peak < MIN_WEIGHT:
                continue
            read_rows, read_cols = _box(weight >= 0.5 * peak)
            rows, cols = _box(weight >= MIN_WEIGHT)
            params = adapter(thumbnail(image[..., read_rows, read_cols]))
            if params.dehaze_weight is not None:  # the floor follows the map's weight, not 1, and the haze read there
                severity = region.severity_where(name, weight)
                params = dataclasses.replace(
                    params, sureness=torch.full_like(params.dehaze_weight, peak),
                    severity=None if severity is None else torch.full_like(params.dehaze_weight, severity))
            source = image[..., rows, cols].float()
            out[..., rows, cols] += weight[rows, cols] * (apply_global(source, params) - source)
    return out.clamp(0, 1).to(image.dtype)


def _box(mask: torch.Tensor) -> tuple[slice, slice]:
    """The bounding box of the true pixels of a [H, W] mask, as (rows, columns)."""
    rows, cols = mask.any(dim=1).nonzero(), mask.any(dim=0).nonzero()
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def restore_regions(
    backbone: Backbone,
    images: torch.Tensor,
    regions: list[RegionWeights],
    compose_fn: PassFn,
    options: SamplerOptions | None = None,
    *,
    progress: ProgressFn | None = None,
    check_interrupt: InterruptFn | None = None,
    skip: Sequence[bool] = (),
    passes_only: bool = False,
    read_again: ReadFn | None = None,
) -> torch.Tensor:
    """The per-region restore of each image of [B,3,H,W], ordered as the whole-image sampler orders a composition
    (``Composition.in_order``), tile by tile: the pass of the kinds a tile restores before a global stage (noise
    before low light; a tile with none is left as it is), the regional global stage on its output, then each tile's
    pass after the stage (its whole composition where nothing went first); an image where no tile has a kind to
    restore first takes no first pass, and only the last pass counts towards the progress. ``read_again``: the
    per-region routing, run on the first pass's output where a window's composition asks for a second reading
    (``regional_global_stage``). ``passes_only``: one
    tiled pass, each tile with ``compose_fn(its region)``, no global stage. An image whose ``skip`` is true is
    returned as it is, without a pass. Trusts its inputs."""
    options = options or SamplerOptions()
    if not passes_only:
        outputs = []
        for index, region in enumerate(regions):
            # one image at a time (its first pass depends on its own tiles), the progress counted over the batch
            shown = None if progress is None else (
                lambda done, total, index=index: progress(index * total + done, total * len(regions)))
            image, own = images[index : index + 1], dataclasses.replace(options, seed=options.seed + index)
            if index < len(skip) and skip[index]:
                outputs.append(restore_regions(backbone, image, [region], compose_fn, own, progress=shown,
                                               skip=[True], passes_only=True))
                continue
            outputs.append(_restore_in_order(backbone, image, region, compose_fn, own, shown, check_interrupt,
                                             read_again))
        return torch.cat(outputs)
    tile = _spatial_tile(options)
    on_tile = tile_counter(images, tile, backbone, progress)
    outputs = []
    for index, region in enumerate(regions):
        if index < len(skip) and skip[index]:
            outputs.append(unchanged(images, index, tile, backbone, on_tile))
            continue
        generator = torch.Generator(device="cpu").manual_seed(options.seed + index)
        # no out-of-memory halving as in restore_one: a 192 px tile is near its 128 px floor already
        image = images[index : index + 1]
        outputs.append(run_tiled(image, _tile_step(backbone, image, region, compose_fn, options, generator,
                                                   check_interrupt),
                                 tile=tile, overlap=backbone.tile_overlap, multiple=backbone.size_multiple,
                                 on_tile=on_tile))
    return torch.cat(outputs)


def _spatial_tile(options: SamplerOptions) -> int:
    """The per-region restore's tile side: the sampler's, at most ``SPATIAL_TILE``."""
    return min(options.tile, SPATIAL_TILE)


def _restore_in_order(backbone: Backbone, image: torch.Tensor, region: RegionWeights, compose_fn: ComposeFn,
                      options: SamplerOptions, progress: ProgressFn | None,
                      check_interrupt: InterruptFn | None, read_again: ReadFn | None = None) -> torch.Tensor:
    """``restore_regions`` for one image [1,3,H,W]."""
    def before_stage(result: RoutingResult) -> Composition | None:
        order = compose_fn(result).in_order()
        return None if order is None else order[0]

    def after_stage(result: RoutingResult) -> Composition | None:
        composition = compose_fn(result)
        order = composition.in_order()
        return composition if order is None else order[1]

    boxes = tile_boxes(*image.shape[-2:], _spatial_tile(options), backbone.tile_overlap, backbone.size_multiple)
    if all(before_stage(_tile_region(region, box)) is None for box in boxes):  # no tile split: no first pass
        return restore_regions(backbone, regional_global_stage(image, region, compose_fn), [region], compose_fn,
                               options, progress=progress, check_interrupt=check_interrupt, passes_only=True)
    first = restore_regions(backbone, image, [region], before_stage, options, check_interrupt=check_interrupt,
                            passes_only=True)
    staged = regional_global_stage(first, region, compose_fn, read_again)
    return restore_regions(backbone, staged, [region], after_stage, options, progress=progress,
                           check_interrupt=check_interrupt, passes_only=True)


def _tile_region(region: RegionWeights, box: tuple[int, int, int, int]) -> RoutingResult:
    """The routing of the tile ``box`` (padded coordinates, clipped to the image the maps describe), weights under
    ``MIN_WEIGHT`` dropped."""
    height, width = region.size
    y0, y1, x0, x1 = box
    return prune(region.region((y0, min(y1, height), x0, min(x1, width))))


def _tile_step(
    backbone: Backbone,
    image: torch.Tensor,
    region: RegionWeights,
    compose_fn: PassFn,
    options: SamplerOptions,
    generator: torch.Generator,
    check_interrupt: InterruptFn | None,
) -> Callable[[torch.Tensor, tuple[int, int, int, int]], torch.Tensor]:
    """run_tiled's step: compose the tile's own weights into the backbone, run it, restore the base. A measured
    conditioning value is read once from the whole ``image``, as the whole-photo restore reads it."""
    dtype = options.dtype or backbone.dtype
    photo_measurement: dict[str, float] | None = None

    def step(tile_image: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
        nonlocal photo_measurement
        if check_interrupt:
            check_interrupt()
        composition = compose_fn(_tile_region(region, box))
        if composition is None:  # nothing for this tile in this pass
            return tile_image.float().cpu()
        if photo_measurement is None:  # once per photo; nothing is measured when no LoRA of the bank asks
            photo_measurement = measure(backbone, image, composition.bank.manifest.loras)
        conditioning = composition.conditioning(backbone, photo_measurement)
        with composed(backbone, composition), torch.inference_mode():
            y = backbone.restore_step(tile_image.to(backbone.device, dtype), conditioning,
                                      steps=options.steps, generator=generator)
        return y.float().clamp(0, 1).cpu()

    return step
