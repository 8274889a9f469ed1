"""The spandrel family: any image-to-image model spandrel recognises (Real-ESRGAN, SCUNet, NAFNet, SwinIR, ...).

spandrel is the library ComfyUI core's "Load Upscale Model" uses: it picks the architecture from a
state dict's keys and builds the network, so one family covers every model in ``models/upscale_models``.
Files are read here, never by spandrel's own file loader: safetensors as they are, ``.pth``/``.ckpt``
only through ``torch.load(weights_only=True)`` (no code execution), then
``ModelLoader().load_from_state_dict``. LoRAs go on every Conv2d and Linear layer (peft).

A ×N super-resolution model restores at ×1 by bringing its output back to the input's size; how is
``scale_mode`` (docs/benchmarks.md, "Backbones side by side", measures both):

- ``downscale_output`` (the default): run the model at full size, area-downscale its ×N output by N.
  Keeps every input pixel; better in every case measured (the margins are in that section).
- ``downscale_input``: area-downscale the input by N, run the model (it returns the input's size).
  N² fewer pixels through the network, so N² times faster, but the area downscale throws detail away.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BackboneError
from .base import Backbone

SCALE_MODES = ("downscale_output", "downscale_input")
DEFAULT_SCALE_MODE = "downscale_output"
PICKLE_SUFFIXES = (".pth", ".ckpt", ".pt")
SUFFIXES = (".safetensors", *PICKLE_SUFFIXES)
INSTALL_HINT = "pip install 'uir-lora[spandrel]' (spandrel==0.4.2; ComfyUI already ships it)"


def _spandrel():
    try:
        import spandrel
    except ImportError as exc:
        raise BackboneError(f"the spandrel backbone family needs the spandrel package: {INSTALL_HINT} "
                            f"({exc})") from exc
    return spandrel


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A model file's tensors without running code: safetensors, or a pickle through weights_only=True."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise BackboneError(f"{path.name}: a spandrel backbone is a {', '.join(SUFFIXES)} file")
    if not path.is_file():
        raise BackboneError(f"backbone file not found: {path}")
    _spandrel()  # its helpers are imported below: name the extra, not a module, when it is missing
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - safetensors, pickle and zip errors have no common base
        raise BackboneError(f"{path}: not a readable weights file ({type(exc).__name__}: {str(exc)[:200]}); "
                            f"pickles holding code or custom classes are refused: save the state dict as "
                            f".safetensors") from exc
    if not isinstance(state, dict):
        raise BackboneError(f"{path}: holds a {type(state).__name__}, not a state dict")
    from spandrel.__helpers.canonicalize import canonicalize_state_dict  # unwraps "params_ema", "state_dict", ...

    return canonicalize_state_dict(state)


def descriptor_from_state_dict(state: dict[str, torch.Tensor], source: str):  # noqa: ANN201 - spandrel type
    """spandrel's ImageModelDescriptor for ``state``; a clear error for unknown or unsuitable models."""
    spandrel = _spandrel()
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(state)
    except spandrel.UnsupportedModelError as exc:
        raise BackboneError(f"{source}: spandrel does not recognise this architecture; use a model spandrel "
                            f"loads (Real-ESRGAN, SCUNet, NAFNet, SwinIR, DRUNet, DAT, ...)") from exc
    except (KeyError, RuntimeError, ValueError, AssertionError) as exc:
        raise BackboneError(f"{source}: spandrel could not build the model ({type(exc).__name__}: "
                            f"{str(exc)[:200]})") from exc
    return descriptor


def lora_targets(model: nn.Module) -> tuple[str, ...]:
    """Every Conv2d (ungrouped: peft's LoRA needs groups == 1) and Linear layer, by full module name.

    A name is dropped when it is also the dotted suffix of another module that LoRA cannot adapt,
    because peft matches target names by suffix.
    """
    adaptable, others = [], []
    for name, module in model.named_modules():
        if not name:
            continue
        if isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1):
            adaptable.append(name)
        else:
            others.append(name)
    return tuple(n for n in adaptable if not any(o.endswith("." + n) for o in others))


def _call_with_autograd(descriptor, image: torch.Tensor) -> torch.Tensor:  # noqa: ANN001 - spandrel type
    """``descriptor(image)`` (spandrel's padding to the model's size rules, its call function, the clamp)
    without the ``torch.inference_mode`` its ``__call__`` is wrapped in, which would stop LoRA training."""
    call = type(descriptor).__call__
    return getattr(call, "__wrapped__", call)(descriptor, image)


class SpandrelBackbone(Backbone):
    """A spandrel ImageModelDescriptor as a frozen restorer; LoRAs on its convolutions and linear layers."""

    family = "spandrel"
    tile_overlap = 32
    max_steps = 1
    default_conditioning: Mapping[str, float] = {}

    def __init__(self, descriptor, scale_mode: str = DEFAULT_SCALE_MODE) -> None:  # noqa: ANN001 - spandrel type
        spandrel = _spandrel()
        if not isinstance(descriptor, spandrel.ImageModelDescriptor):
            raise BackboneError(f"got a {type(descriptor).__name__}, not a spandrel ImageModelDescriptor (an "
                                f"inpainting model, or not a spandrel model); a backbone must be image-to-image")
        if descriptor.input_channels != 3 or descriptor.output_channels != 3:
            raise BackboneError(f"{descriptor.architecture.name} takes {descriptor.input_channels} and returns "
                                f"{descriptor.output_channels} channels; the engine restores RGB images (3 and 3)")
        if scale_mode not in SCALE_MODES:
            raise BackboneError(f"scale_mode {scale_mode!r} is unknown; choose one of {', '.join(SCALE_MODES)}")
        self.descriptor = descriptor
        self.scale_mode = scale_mode
        descriptor.model.eval().requires_grad_(False)
        self.default_lora_targets = lora_targets(descriptor.model)
        if not self.default_lora_targets:
            raise BackboneError(f"{descriptor.architecture.name} has no Conv2d or Linear layer a LoRA could adapt")

    @classmethod
    def from_file(cls, path: str | Path, scale_mode: str = DEFAULT_SCALE_MODE) -> SpandrelBackbone:
        backbone = cls(descriptor_from_state_dict(read_state_dict(path), Path(path).name), scale_mode)
        _ = backbone.fingerprint  # computed now, in float32, before any dtype change
        return backbone

    @classmethod
    def from_descriptor(cls, descriptor, scale_mode: str = DEFAULT_SCALE_MODE) -> SpandrelBackbone:  # noqa: ANN001
        """A backbone around a copy of an already loaded model (core's UPSCALE_MODEL): adapters never touch it."""
        import copy

        backbone = cls(copy.deepcopy(descriptor), scale_mode)
        _ = backbone.fingerprint
        return backbone

    @property
    def architecture(self) -> str:
        return str(self.descriptor.architecture.name)

    @property
    def scale(self) -> int:
        return int(self.descriptor.scale)

    @property
    def size_multiple(self) -> int:  # type: ignore[override]
        # spandrel pads to the model's own size requirements; only the ×N area downscale needs whole blocks
        return self.scale if self.scale_mode == "downscale_input" else 1

    @property
    def adapter_root(self) -> nn.Module:
        return self.descriptor.model

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> SpandrelBackbone:
        unsupported = ((dtype == torch.float16 and not self.descriptor.supports_half)
                       or (dtype == torch.bfloat16 and not self.descriptor.supports_bfloat16))
        if unsupported:
            raise BackboneError(f"{self.architecture} does not support {dtype} (spandrel says so); use fp32")
        super().to(device, dtype)
        return self

    def restore_step(
        self,
        image: torch.Tensor,
        conditioning: Mapping[str, float],
        *,
        steps: int = 1,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        x = image.to(self.dtype)
        if self.scale > 1 and self.scale_mode == "downscale_input":
            x = F.interpolate(x, scale_factor=1 / self.scale, mode="area")
        y = _call_with_autograd(self.descriptor, x)
        if self.scale > 1 and self.scale_mode == "downscale_output":
            y = F.avg_pool2d(y, self.scale)
        return y.to(image.dtype)
