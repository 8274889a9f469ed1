"""What every node shares: socket types, IMAGE layout conversion, model folders, progress/interrupt hooks.

Only this package talks to ComfyUI (comfy, comfy_api, folder_paths); the engine in ../uir_lora never does.
"""

from __future__ import annotations

import os

import comfy.model_management as mm
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io

from ..uir_lora import pipeline
from ..uir_lora.errors import InputError

CATEGORY = "image/restoration"
MODEL_FOLDER = "uir_lora"
"""models/uir_lora/<bank>/ holds user banks (manifest.json + one safetensors per LoRA)."""

Backbone = io.Custom("UIR_BACKBONE")
Bank = io.Custom("UIR_BANK")
Routing = io.Custom("UIR_ROUTING")
Composition = io.Custom("UIR_COMPOSITION")


def register_model_folder() -> None:
    """Make ``uir_lora`` a folder_paths key, keeping paths a user set in extra_model_paths.yaml.

    Not add_model_folder_path(): on a new key it creates an empty extension set, which matches
    every file (.json, .txt) in the folder.
    """
    entry = folder_paths.folder_names_and_paths.get(MODEL_FOLDER)
    paths = list(entry[0]) if entry else [os.path.join(folder_paths.models_dir, MODEL_FOLDER)]
    folder_paths.folder_names_and_paths[MODEL_FOLDER] = (paths, set(folder_paths.supported_pt_extensions))


def bank_roots() -> list[str]:
    """The uir_lora model folders (searched before the pack's own lora_bank/)."""
    register_model_folder()
    return list(folder_paths.get_folder_paths(MODEL_FOLDER))


def bank_choices() -> list[str]:
    """Bank names for a combo; the shipped default first so new nodes pick it."""
    names = pipeline.list_banks(bank_roots())
    if pipeline.DEFAULT_BANK in names:
        names.remove(pipeline.DEFAULT_BANK)
        names.insert(0, pipeline.DEFAULT_BANK)
    return names or [pipeline.DEFAULT_BANK]  # an empty combo breaks the widget; loading then names the folders


def to_engine(image: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE [B,H,W,C] -> engine [B,3,H,W] (an alpha channel is dropped)."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (3, 4):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise InputError(f"expected a ComfyUI IMAGE [B,H,W,3], got {shape}")
    return image[..., :3].movedim(-1, 1).float()


def to_comfy(image: torch.Tensor) -> torch.Tensor:
    """Engine [B,3,H,W] -> ComfyUI IMAGE [B,H,W,3], float32 0..1 on the intermediate device."""
    return image.movedim(1, -1).clamp(0, 1).to(mm.intermediate_device(), torch.float32).contiguous()


def hooks() -> tuple[pipeline.ProgressFn, pipeline.InterruptFn]:
    """The engine's progress(done, total) and check_interrupt() bound to ComfyUI's bar and flag."""
    bar: list[comfy.utils.ProgressBar] = []

    def progress(done: int, total: int) -> None:
        if not bar:
            bar.append(comfy.utils.ProgressBar(total))
        bar[0].update_absolute(done, total)

    return progress, mm.throw_exception_if_processing_interrupted

