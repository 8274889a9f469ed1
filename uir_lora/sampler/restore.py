"""The restoration sampler: composed backbone, tiles, batches, seed, progress and cancellation."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..backbones.base import Backbone
from ..compose.composer import Composition, composed
from ..errors import InputError, RestoreInterrupted, check_int
from ..global_stage import run_adapters
from .multiscale import multiscale, pyramid_levels
from .tiling import count_tiles, run_tiled

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
"""progress(done, total), called after each tile."""
InterruptFn = Callable[[], None]
"""check_interrupt(): raises (e.g. RestoreInterrupted) to stop; called before each tile."""

MIN_TILE = 128
MAX_TILE_BATCH = 64


@dataclass
class SamplerOptions:
    tile: int = 512
    steps: int = 1
    seed: int = 0
    dtype: torch.dtype | None = None
    tile_batch: int = 1
    """Tiles run through the backbone together (more keeps a GPU busy); halved on out-of-memory."""

    def validate(self, backbone: Backbone) -> None:
        """Check the values (they may come from a workflow file) and store them as ints."""
        self.tile = check_int("tile", self.tile, 64, 8192)
        self.steps = check_int("steps", self.steps, 1, backbone.max_steps)
        self.seed = check_int("seed", self.seed, 0, 2**63 - 1)
        self.tile_batch = check_int("tile batch", self.tile_batch, 1, MAX_TILE_BATCH)


def as_image_batch(image: torch.Tensor) -> torch.Tensor:
    """Validate an image batch [B,3,H,W]: float, finite (NaN/Inf replaced, with a log line), in 0..1."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[1] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise InputError(f"expected an RGB image batch [B,3,H,W], got {shape}")
    if image.shape[0] == 0 or image.shape[-1] == 0 or image.shape[-2] == 0:
        raise InputError(f"image batch is empty: {tuple(image.shape)}")
    if not image.is_floating_point():  # a uint8 batch would silently saturate to white
        raise InputError(f"expected float pixels in 0..1, got {image.dtype}; divide 8-bit images by 255")
    image = image.float()
    low, high = torch.aminmax(image)  # one pass; NaN propagates into both, Inf lands outside 0..1
    if 0 <= low and high <= 1:  # the usual case: one pass over the pixels, no copy
        return image
    if not torch.isfinite(image).all():
        log.warning("input holds NaN or Inf values; they were replaced (NaN->0, Inf->1)")
        image = torch.nan_to_num(image, nan=0.0, posinf=1.0, neginf=0.0)
    return image.clamp(0, 1)


def restore_batch(
    backbone: Backbone,
    images: torch.Tensor,
    compositions: list[Composition],
    options: SamplerOptions | None = None,
    *,
    progress: ProgressFn | None = None,
    check_interrupt: InterruptFn | None = None,
) -> torch.Tensor:
    """Restore each image of [B,3,H,W] with its own composition (one per image, or one for all); an image whose
    composition has confidence 0 is returned as it is, without a pass.

    Trusts its inputs: ``pipeline`` validates the images and the options once, at its entry.
    """
    options = options or SamplerOptions()
    if len(compositions) not in (1, images.shape[0]):
        raise InputError(f"need 1 or {images.shape[0]} compositions, got {len(compositions)}")
    per_image = compositions * images.shape[0] if len(compositions) == 1 else compositions
    on_tile = tile_counter(images, options.tile, backbone, progress)
    outputs = []
    for index, composition in enumerate(per_image):
        if composition.confidence == 0:  # an unsure router returns the image as it came: no pass to blend away
            outputs.append(unchanged(images, index, options.tile, backbone, on_tile))
            continue
        generator = torch.Generator(device="cpu").manual_seed(options.seed + index)
        outputs.append(
            restore_one(backbone, images[index : index + 1], composition, options, generator, on_tile, check_interrupt)
        )
    return torch.cat(outputs)


def unchanged(images: torch.Tensor, index: int, tile: int, backbone: Backbone,
              on_tile: Callable[[], None]) -> torch.Tensor:
    """Image ``index`` of [B,3,H,W] as it came, without a pass; its tiles still count towards the progress."""
    for _ in range(count_tiles(*images.shape[-2:], tile, backbone.tile_overlap, backbone.size_multiple)):
        on_tile()
    return images[index : index + 1].float()


def tile_counter(
    images: torch.Tensor, tile: int, backbone: Backbone, progress: ProgressFn | None
) -> Callable[[], None]:
    """An on_tile() hook that reports progress(done, total) over every tile of every image."""
    total = count_tiles(*images.shape[-2:], tile, backbone.tile_overlap, backbone.size_multiple) * images.shape[0]
    done = 0

    def on_tile() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total)

    return on_tile


def restore_one(
    backbone: Backbone,
    image: torch.Tensor,
    composition: Composition,
    options: SamplerOptions,
    generator: torch.Generator,
    on_tile: Callable[[], None] | None = None,
    check_interrupt: InterruptFn | None = None,
) -> torch.Tensor:
    """One image through the global stage and the composed backbone, or, for a composition with a kind restored
    before another's global stage (``Composition.in_order``), through that kind's pass, the global stage (with the
    weights ``Composition.reread`` gives for the image after that pass, if set), and a pass for the local kinds left;
    on out-of-memory, halve the tile batch, then the tile down to 128."""
    passes = composition.in_order()
    if passes is None:
        return backbone_pass(backbone, global_stage(image, composition), composition, options, generator, on_tile,
                             check_interrupt)
    first, after = passes
    image = backbone_pass(backbone, image, first, options, generator, on_tile, check_interrupt)
    staged = composition.reread(image) if composition.reread is not None else composition
    raised = {name: weight for name, weight in staged.weights.items() if weight != composition.weights[name]}
    if raised:  # the returned compositions keep the first reading's weights: say what the stage ran with
        log.info("read again after the first pass: %s", ", ".join(
            f"{name} {composition.weights[name]:.2f} -> {weight:.2f}" for name, weight in raised.items()))
    image = global_stage(image, staged).clamp(0, 1)
    # the progress counts one pass per image: a second pass is not counted
    return image if after is None else backbone_pass(backbone, image, after, options, generator, None,
                                                     check_interrupt)


def backbone_pass(
    backbone: Backbone,
    image: torch.Tensor,
    composition: Composition,
    options: SamplerOptions,
    generator: torch.Generator,
    on_tile: Callable[[], None] | None = None,
    check_interrupt: InterruptFn | None = None,
) -> torch.Tensor:
    """One image through the backbone with the composition's LoRAs, tile by tile (no global stage)."""
    conditioning = composition.conditioning(backbone, composition.measure(backbone, image))
    dtype = options.dtype or backbone.dtype
    tile, batch = options.tile, options.tile_batch

    def step(tile_image: torch.Tensor, _box: tuple[int, int, int, int]) -> torch.Tensor:
        if check_interrupt:
            check_interrupt()
        x = tile_image.to(backbone.device, dtype)
        with torch.inference_mode():
            y = backbone.restore_step(x, conditioning, steps=options.steps, generator=generator)
        if not torch.isfinite(y).all():  # clamp would let NaN through into the saved image
            raise InputError("the restored image is not finite (NaN/Inf); lower the LoRA weights, or run the "
                             "backbone in float32 if it is in half precision")
        return y.float().clamp(0, 1).cpu()

    def tiled(level: torch.Tensor) -> torch.Tensor:
        nonlocal tile, batch
        # the progress counts the full-scale tiles only: a coarser level costs a quarter of the one above it
        counted = on_tile if level.shape[-2:] == image.shape[-2:] else None
        while True:
            try:
                return run_tiled(level, step, tile=tile, overlap=backbone.tile_overlap,
                                 multiple=backbone.size_multiple, on_tile=counted, batch=batch)
            except torch.OutOfMemoryError:
                if batch > 1:
                    batch //= 2
                    log.warning("out of memory: retrying with %d tiles at a time", batch)
                    continue
                if tile // 2 < MIN_TILE:
                    raise
                tile //= 2
                log.warning("out of memory: retrying with %d px tiles", tile)

    levels = pyramid_levels_of(composition, *image.shape[-2:])
    if levels:
        log.info("coarse to fine: %s on the photo and %d halved copies of it", ", ".join(composition.weights), levels)
    with composed(backbone, composition):
        return multiscale(tiled, image, levels)


def pyramid_levels_of(composition: Composition, height: int, width: int) -> int:
    """How many halved copies of a ``height`` x ``width`` photo a pass of ``composition`` also runs on
    (``LoraEntry.coarsest_side``): none unless every LoRA with a weight asks for it, and then as many as keep the
    shorter side at or above the largest side asked."""
    manifest = composition.bank.manifest
    sides = [manifest.lora(name).coarsest_side for name, weight in composition.weights.items() if weight]
    if not sides or not all(sides):
        return 0
    return pyramid_levels(height, width, max(sides))


def global_stage(image: torch.Tensor, composition: Composition) -> torch.Tensor:
    """The composition's global transform on the whole image [B,3,H,W] (the input itself when no active kind has
    one). Whole-image, before any tiling, so the result does not depend on the tile size."""
    weighted = composition.global_adapters()
    if not weighted:
        return image
    with torch.inference_mode():
        return run_adapters(image, weighted, composition.dehaze_severity()).to(image.dtype)


def interrupt_flag(flag: Callable[[], bool]) -> InterruptFn:
    """Make a check_interrupt hook from a polling function (True = stop)."""

    def check() -> None:
        if flag():
            raise RestoreInterrupted("restore cancelled; the backbone was returned to its base state")

    return check
