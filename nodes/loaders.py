"""Backbone and LoRA-bank loader nodes: resolve files through folder_paths, hand plain paths to the engine."""

from __future__ import annotations

import os
from pathlib import Path

import comfy.model_management as mm
import folder_paths
import torch
from comfy_api.latest import io

from ..uir_lora import pipeline
from ..uir_lora.errors import BackboneError, InputError, UnsafePathError
from .common import CATEGORY, Backbone, Bank, bank_choices, bank_roots

EMBEDDED = "embedded-ffdnet (built in)"
EMBEDDED_REALESRGAN = "embedded-realesrgan (built in, converted on first use)"
SEP = " | "
"""Combo entries other than the built-in ones read "<family> | <folder key>/<name>"."""
FAMILY_FOLDERS = {("sd-turbo", "diffusers"), ("sd-turbo", "checkpoints"), ("spandrel", "upscale_models")}
"""The folder_paths keys each family's combo entries come from."""
SPANDREL_SUFFIXES = (".safetensors", ".pth", ".ckpt", ".pt")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DEVICES = ("auto", "cpu", "cuda")


def diffusers_folders() -> list[str]:
    """Sub-folders of models/diffusers that hold a model_index.json (as core's DiffusersLoader finds them)."""
    found = []
    for root in folder_paths.get_folder_paths("diffusers"):
        if not os.path.isdir(root):
            continue
        for current, _dirs, files in os.walk(root, followlinks=True):
            if "model_index.json" in files:
                found.append(Path(current).relative_to(root).as_posix())
    return sorted(set(found))


TRAIN_SD_TURBO_BANK = ("uir-lora train-lora --backbone sd-turbo --backbone-path <weights> --bank <folder>, "
                       "see docs/sd_turbo.md")
SD_TURBO_NEEDS = ("the SD-Turbo weights (stabilityai/sd-turbo) in models/checkpoints/ (a name with 'turbo') or "
                  "models/diffusers/, and a LoRA bank trained on exactly those weights in models/uir_lora/<bank>/ "
                  f"({TRAIN_SD_TURBO_BANK}); the pack ships neither")


def looks_like_sd_turbo(name: str) -> bool:
    """SD-Turbo family by name: 'turbo' but not SDXL-Turbo (another architecture the family cannot load).

    Only filters the combo; a name typed into an API prompt is still loaded, and the loader's layout check
    names what is wrong with a checkpoint that is not SD-Turbo.
    """
    lowered = name.lower()
    return "turbo" in lowered and "xl" not in lowered


def upscale_model_files() -> list[str]:
    """Files in ComfyUI's upscale_models folders (extra_model_paths included) the spandrel family can read."""
    if "upscale_models" not in folder_paths.folder_names_and_paths:
        return []
    return [n for n in folder_paths.get_filename_list("upscale_models") if n.lower().endswith(SPANDREL_SUFFIXES)]


def backbone_choices() -> list[str]:
    checkpoints = [n for n in folder_paths.get_filename_list("checkpoints") if n.lower().endswith(".safetensors")]
    return ([EMBEDDED, EMBEDDED_REALESRGAN]
            + [f"sd-turbo{SEP}diffusers/{name}" for name in diffusers_folders() if looks_like_sd_turbo(name)]
            + [f"sd-turbo{SEP}checkpoints/{name}" for name in checkpoints if looks_like_sd_turbo(name)]
            + [f"spandrel{SEP}upscale_models/{name}" for name in upscale_model_files()])


def resolve_backbone(choice: str) -> tuple[str, Path | None]:
    """Combo entry -> (family, path); a missing file raises an error naming the folder and file expected."""
    if choice == EMBEDDED:
        return "embedded-ffdnet", None
    if choice == EMBEDDED_REALESRGAN:
        return "embedded-realesrgan", None
    family, sep, where = choice.partition(SEP)
    key, _, name = where.partition("/")
    if not sep or (family, key) not in FAMILY_FOLDERS or not name:
        raise InputError(f"backbone {choice!r} is not one of: {EMBEDDED!r}, {EMBEDDED_REALESRGAN!r}, "
                         f"'sd-turbo{SEP}diffusers/<folder>', 'sd-turbo{SEP}checkpoints/<file>.safetensors', "
                         f"'spandrel{SEP}upscale_models/<file>'")
    roots = folder_paths.get_folder_paths(key)
    expected = f"models/{key}/{name}" + ("/model_index.json" if key == "diffusers" else "")
    try:
        path = pipeline.safe_resolve(name, roots, what=f"{family} backbone")
    except FileNotFoundError:
        raise BackboneError(f"backbone file missing: expected {expected} (searched: {', '.join(roots)}); "
                            f"download the {family} weights there") from None
    if key == "diffusers" and not (path / "model_index.json").is_file():
        raise BackboneError(f"{path} is not a diffusers folder: expected {expected}")
    return family, path


def backbone_problems(choice: str) -> list[str]:
    """Everything that stops this backbone from restoring, found before any weights load: the file, and a bank."""
    problems = []
    try:
        family, _ = resolve_backbone(choice)
    except (InputError, BackboneError, UnsafePathError) as exc:
        problems.append(str(exc))
        family = choice.partition(SEP)[0]
    needs_bank = family in pipeline.BACKBONE_FAMILIES and family != "embedded-ffdnet"
    if needs_bank and not pipeline.banks_for_family(family, bank_roots()):
        how = TRAIN_SD_TURBO_BANK if family == "sd-turbo" else "uir-lora train-lora"
        problems.append(f"no LoRA bank for the {family} backbone is installed in models/uir_lora/ and none ships "
                        f"with the pack: train one on exactly these weights ({how})")
    return problems


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return mm.get_torch_device()
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' was chosen but no CUDA GPU is available; choose 'auto' or 'cpu'")
    return torch.device(device)


class UIR_BackboneLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="UIR_BackboneLoader", display_name="UIR Backbone Loader", category=CATEGORY,
            description="Load the frozen restoration backbone the LoRA bank was trained on. The built-in FFDNet "
                        "and its bank ship with the pack and run on any machine. SD-Turbo needs "
                        + SD_TURBO_NEEDS + ".",
            inputs=[
                io.Combo.Input("backbone", options=backbone_choices(), default=EMBEDDED,
                               tooltip="the built-in FFDNet (ships with its bank) or Real-ESRGAN (converted on first "
                                       "use, no bank ships), your SD-Turbo weights from models/checkpoints (names "
                                       "with 'turbo') or models/diffusers (a folder with model_index.json; it also "
                                       "needs a bank you train, none ships), or any spandrel model from "
                                       "models/upscale_models"),
                io.Combo.Input("device", options=list(DEVICES), default="auto",
                               tooltip="where the backbone runs: auto = ComfyUI's device (the GPU if there is one)"),
                io.Combo.Input("dtype", options=list(DTYPES), default="fp32",
                               tooltip="weight precision: fp32 everywhere; bf16/fp16 halve the memory on a GPU"),
                io.UpscaleModel.Input("upscale_model", optional=True,
                                      tooltip="a model from core's Load Upscale Model (any spandrel model); when "
                                              "connected it is the backbone instead of the list's choice"),
            ],
            outputs=[Backbone.Output(display_name="backbone",
                                     tooltip="the frozen backbone: connect it to the Bank Loader and to Restore")],
        )

    @classmethod
    def validate_inputs(cls, backbone: str) -> bool | str:
        # Replaces ComfyUI's "value not in list" with a message naming every file and folder to add, before
        # gigabytes of weights load only for the bank loader to stop.
        problems = backbone_problems(backbone)
        return "; and ".join(problems) if problems else True

    @classmethod
    def execute(cls, backbone: str, device: str, dtype: str, upscale_model=None) -> io.NodeOutput:
        if dtype not in DTYPES or device not in DEVICES:  # API prompts skip the combo's check
            raise InputError(f"dtype must be one of {', '.join(DTYPES)} and device one of {', '.join(DEVICES)}; "
                             f"got dtype {dtype!r}, device {device!r}")
        if upscale_model is not None:
            return io.NodeOutput(pipeline.backbone_from_upscale_model(upscale_model, pick_device(device),
                                                                      DTYPES[dtype]))
        family, path = resolve_backbone(backbone)
        # one cached object per device/dtype: two loaders with other settings never move each other's
        return io.NodeOutput(pipeline.load_backbone(family, path, pick_device(device), DTYPES[dtype]))


class UIR_LoraBankLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="UIR_LoraBankLoader", display_name="UIR LoRA Bank Loader", category=CATEGORY,
            description="Open a LoRA bank (the pack's lora_bank/ or models/uir_lora/<bank>/) and attach it "
                        "to the backbone; a bank made for other backbone weights is refused.",
            inputs=[
                Backbone.Input("backbone", tooltip="the backbone from UIR Backbone Loader"),
                io.Combo.Input("bank", options=bank_choices(), default=pipeline.DEFAULT_BANK,
                               tooltip="a folder with manifest.json and one safetensors file per LoRA: the pack's "
                                       "embedded-ffdnet bank, or your own in models/uir_lora/<bank>/"),
            ],
            outputs=[Bank.Output(display_name="bank",
                                 tooltip="the LoRAs and their router, attached to the backbone")],
        )

    @classmethod
    def execute(cls, backbone, bank: str) -> io.NodeOutput:
        loaded = pipeline.load_bank(bank, bank_roots())
        loaded.attach(backbone)  # validates family + fingerprint, reads and checks every LoRA file
        return io.NodeOutput(loaded)
