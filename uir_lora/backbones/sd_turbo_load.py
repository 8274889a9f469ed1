"""Reading SD-Turbo weights offline: diffusers folders and single-file SD 2.x checkpoints.

Each loader returns (unet, vae, prompt conditioning [1, 77, D], scheduler config); the text encoder
is used once for the fixed prompt and then dropped (1.3 GB in float32 that a restore never needs).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers import CLIPTextModel, CLIPTokenizer

from ..errors import BackboneError

CONFIG_DIR = Path(__file__).parent / "configs" / "sd_turbo"
CHECKPOINT_NAME = "sd_turbo.safetensors"
MISSING_HINT = (f"put {CHECKPOINT_NAME} (stabilityai/sd-turbo) in ComfyUI/models/checkpoints/, or a diffusers "
                f"folder with model_index.json (unet/, vae/, text_encoder/) in ComfyUI/models/diffusers/")
# The empty prompt tokenised by SD 2.x's CLIP tokenizer: <start>, <end>, then "!" (id 0) as padding to 77.
# Used when no tokenizer files are at hand (single-file checkpoints), so the pack ships no vocabulary.
EMPTY_PROMPT_IDS = (49406, 49407) + (0,) * 75
SINGLE_FILE_SUFFIXES = (".safetensors", ".sft")
UNET_PREFIX, VAE_PREFIX = "model.diffusion_model.", "first_stage_model."
OPEN_CLIP_KEY = "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"
Loaded = tuple[UNet2DConditionModel, AutoencoderKL, torch.Tensor, dict]


def load_folder(path: Path, prompt: str) -> Loaded:
    """A diffusers folder: unet/, vae/, text_encoder/ (+ tokenizer/, scheduler/ if present)."""
    for sub in ("unet", "vae", "text_encoder"):
        if not (path / sub).is_dir():
            raise BackboneError(f"{path} has no {sub}/ subfolder; a complete diffusers folder is needed: "
                                f"{MISSING_HINT}")
    unet = _from_pretrained(UNet2DConditionModel, path, "unet")
    vae = _from_pretrained(AutoencoderKL, path, "vae")
    text_encoder = _from_pretrained(CLIPTextModel, path / "text_encoder", None)
    tokenizer = (CLIPTokenizer.from_pretrained(path / "tokenizer", local_files_only=True)
                 if (path / "tokenizer").is_dir() else None)
    scheduler = path / "scheduler" / "scheduler_config.json"
    if not scheduler.is_file():
        scheduler = CONFIG_DIR / "scheduler" / "scheduler_config.json"
    return unet, vae, encode_prompt(text_encoder, tokenizer, prompt), _read_json(scheduler)


def _from_pretrained(cls, path: Path, subfolder: str | None):
    """``from_pretrained`` offline; falls back to the fp16 variant files diffusers folders often hold."""
    kwargs = {"local_files_only": True} | ({"subfolder": subfolder} if subfolder else {})
    errors = []
    for variant in (None, "fp16"):
        try:
            return cls.from_pretrained(path, variant=variant, **kwargs)
        except (OSError, ValueError, RuntimeError) as exc:
            errors.append(str(exc).splitlines()[0][:200])
    where = path / subfolder if subfolder else path
    raise BackboneError(f"could not load {cls.__name__} from {where}: {errors[0]}; the folder must hold its "
                        f"config.json and weights (.safetensors, or .fp16.safetensors)")


def load_single_file(path: Path, config_dir: Path, prompt: str) -> Loaded:
    """A single-file SD 2.x checkpoint (original key layout) read with the configs in ``config_dir``."""
    if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
        raise BackboneError(f"{path.name}: only .safetensors checkpoints are loaded (no pickles); "
                            f"download the .safetensors version ({path.stem}.safetensors)")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BackboneError(f"{path}: not a readable safetensors file ({exc}); re-download it. {MISSING_HINT}") from exc
    _check_layout(path, state)
    try:
        unet = UNet2DConditionModel.from_single_file(state, config=str(config_dir), subfolder="unet",
                                                     local_files_only=True)
        vae = AutoencoderKL.from_single_file(state, config=str(config_dir), subfolder="vae", local_files_only=True)
        text_encoder = create_diffusers_clip_model_from_ldm(CLIPTextModel, state, subfolder="text_encoder",
                                                            config=str(config_dir), local_files_only=True)
    except (ValueError, RuntimeError, KeyError) as exc:
        raise BackboneError(f"{path}: its tensors do not fit the SD-Turbo (SD 2.x) architecture of {config_dir} "
                            f"({str(exc)[:300]}); is it an SD 2.x / SD-Turbo checkpoint?") from exc
    del state
    tokenizer_dir = config_dir / "tokenizer"
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir, local_files_only=True) if tokenizer_dir.is_dir() else None
    scheduler = _read_json(config_dir / "scheduler" / "scheduler_config.json")
    return unet, vae, encode_prompt(text_encoder, tokenizer, prompt), scheduler


def _check_layout(path: Path, state: dict) -> None:
    if not any(k.startswith(UNET_PREFIX) for k in state) or not any(k.startswith(VAE_PREFIX) for k in state):
        raise BackboneError(f"{path.name}: not a full Stable Diffusion checkpoint (no {UNET_PREFIX}* or "
                            f"{VAE_PREFIX}* tensors); {MISSING_HINT}")
    if OPEN_CLIP_KEY not in state:
        raise BackboneError(f"{path.name}: its text encoder is not OpenCLIP (SD 1.x or SDXL checkpoint?); the "
                            f"sd-turbo family needs an SD 2.x-architecture checkpoint such as "
                            f"{path.parent}/sd_turbo.safetensors")


def encode_prompt(text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer | None, prompt: str) -> torch.Tensor:
    """The fixed prompt's conditioning (last hidden state, as SD 2.x pipelines use it), computed once."""
    if tokenizer is not None:
        ids = tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
    elif prompt == "":
        ids = torch.tensor([EMPTY_PROMPT_IDS])
    else:
        raise BackboneError(f"prompt {prompt!r} needs the tokenizer files (tokenizer/vocab.json, merges.txt): use a "
                            f"diffusers folder that has tokenizer/, or the empty prompt")
    with torch.no_grad():
        return text_encoder(ids.to(text_encoder.device))[0].float()


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())
