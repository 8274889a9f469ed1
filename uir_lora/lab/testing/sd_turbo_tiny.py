"""Tiny random SD 2.x-architecture models written in both layouts the sd-turbo loader reads.

- ``write_diffusers_folder``: save_pretrained per component + model_index.json (+ a tiny tokenizer);
- ``write_single_file``: the original (LDM / OpenCLIP) key layout of SD 2.x single-file checkpoints,
  i.e. the inverse of diffusers' ``convert_ldm_unet_checkpoint``, ``convert_ldm_vae_checkpoint`` and
  ``convert_open_clip_checkpoint``, so loading it exercises diffusers' real single-file conversion.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

from ...backbones.sd_turbo import CONFIG_DIR

LAYERS_PER_BLOCK = 1
RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
          "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
CLIP_NAMES = (("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj"),
              ("self_attn.out_proj", "attn.out_proj"))


def tiny_models(seed: int = 0) -> tuple[UNet2DConditionModel, AutoencoderKL, CLIPTextModel]:
    """SD 2.x block types at toy width: the UNet's last down / first up block have no attention."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, block_out_channels=(32, 64), layers_per_block=LAYERS_PER_BLOCK, cross_attention_dim=32,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, norm_num_groups=16)
    vae = AutoencoderKL(block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8,
                        layers_per_block=1, sample_size=32, scaling_factor=0.18215)
    text = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, vocab_size=49408, max_position_embeddings=77,
                                       hidden_act="gelu", projection_dim=32))
    return unet.eval(), vae.eval(), text.eval()


def write_configs(root: Path, unet: UNet2DConditionModel, vae: AutoencoderKL, text: CLIPTextModel) -> Path:
    """A config-only folder, like the pack's configs/sd_turbo/ but for the tiny architecture."""
    unet.save_config(root / "unet")
    vae.save_config(root / "vae")
    text.config.save_pretrained(root / "text_encoder")
    shutil.copytree(CONFIG_DIR / "scheduler", root / "scheduler", dirs_exist_ok=True)
    shutil.copy(CONFIG_DIR / "model_index.json", root / "model_index.json")
    return root


def write_diffusers_folder(root: Path, unet, vae, text, *, tokenizer: bool = True) -> Path:
    unet.save_pretrained(root / "unet")
    vae.save_pretrained(root / "vae")
    text.save_pretrained(root / "text_encoder")
    write_configs(root, unet, vae, text)
    if tokenizer:
        write_tiny_tokenizer(root / "tokenizer")
    return root


def write_tiny_tokenizer(folder: Path) -> Path:
    """A CLIP BPE tokenizer whose special ids equal SD 2.x's (start 49406, end 49407, pad "!" = 0)."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"!": 0, "a</w>": 1, "b</w>": 2, "<|startoftext|>": 49406, "<|endoftext|>": 49407}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "!"}))
    return folder


def write_single_file(path: Path, unet, vae, text) -> Path:
    state = {"model.diffusion_model." + k: v for k, v in unet_to_ldm(unet.state_dict()).items()}
    state |= {"first_stage_model." + k: v for k, v in vae_to_ldm(vae.state_dict()).items()}
    state |= {"cond_stage_model.model." + k: v for k, v in text_to_open_clip(text.state_dict()).items()}
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def _ldm_block(group: str, index: int, kind: str, rest: str) -> str:
    """``kind`` resnets -> ``<group>.<index>.0.<renamed>``; attentions -> ``<group>.<index>.1.<rest>``."""
    if kind != "resnets":
        return f"{group}.{index}.1.{rest}"
    head, _, tail = rest.partition(".")
    if group == "middle_block":
        return f"{group}.{index}.{RESNET.get(head, head)}.{tail}"
    return f"{group}.{index}.0.{RESNET.get(head, head)}.{tail}"


def unet_to_ldm(sd: dict[str, torch.Tensor], lpb: int = LAYERS_PER_BLOCK) -> dict[str, torch.Tensor]:
    basic = dict(DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"])
    out = {}
    for key, value in sd.items():
        p = key.split(".")
        if key in basic:
            out[basic[key]] = value
        elif p[0] == "down_blocks" and p[2] == "downsamplers":
            out[f"input_blocks.{(int(p[1]) + 1) * (lpb + 1)}.0.op.{p[-1]}"] = value
        elif p[0] == "down_blocks":
            n, rest = int(p[1]) * (lpb + 1) + int(p[3]) + 1, ".".join(p[4:])
            out[_ldm_block("input_blocks", n, p[2], rest)] = value
        elif p[0] == "mid_block":
            rest = ".".join(p[3:])
            out[_ldm_block("middle_block", 2 * int(p[2]), "resnets", rest) if p[1] == "resnets"
                else f"middle_block.1.{rest}"] = value
        elif p[0] == "up_blocks" and p[2] == "upsamplers":
            slot = 2 if any(k.startswith(f"up_blocks.{p[1]}.attentions.") for k in sd) else 1
            out[f"output_blocks.{int(p[1]) * (lpb + 1) + lpb}.{slot}.conv.{p[-1]}"] = value
        elif p[0] == "up_blocks":
            n, rest = int(p[1]) * (lpb + 1) + int(p[3]), ".".join(p[4:])
            out[_ldm_block("output_blocks", n, p[2], rest)] = value
        else:
            raise KeyError(f"no LDM name for UNet key {key}")
    return out


def vae_to_ldm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    basic = dict(DIFFUSERS_TO_LDM_MAPPING["vae"])
    n_up = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("decoder.up_blocks."))
    out = {}
    for key, value in sd.items():
        if key in basic:
            out[basic[key]] = value
            continue
        p = key.split(".")
        side, block = p[0], p[1]
        if block == "mid_block" and p[2] == "attentions":
            rest = ".".join(p[4:]).replace("group_norm.", "norm.").replace("to_out.0.", "proj_out.")
            for name in "qkv":
                rest = rest.replace(f"to_{name}.", f"{name}.")
            out[f"{side}.mid.attn_1.{rest}"] = value[..., None, None] if value.ndim == 2 else value
        elif block == "mid_block":
            out[f"{side}.mid.block_{int(p[3]) + 1}.{'.'.join(p[4:])}".replace("conv_shortcut", "nin_shortcut")] = value
        else:
            level = int(p[2]) if side == "encoder" else n_up - 1 - int(p[2])
            kind = {"down_blocks": "down", "up_blocks": "up"}[block]
            if p[3] == "resnets":
                rest = f"block.{p[4]}.{'.'.join(p[5:])}".replace("conv_shortcut", "nin_shortcut")
            else:
                rest = f"{'downsample' if kind == 'down' else 'upsample'}.conv.{p[-1]}"
            out[f"{side}.{kind}.{level}.{rest}"] = value
    return out


def text_to_open_clip(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    sd = {k.removeprefix("text_model."): v for k, v in sd.items() if "position_ids" not in k}
    out = {"token_embedding.weight": sd.pop("embeddings.token_embedding.weight"),
           "positional_embedding": sd.pop("embeddings.position_embedding.weight"),
           "ln_final.weight": sd.pop("final_layer_norm.weight"), "ln_final.bias": sd.pop("final_layer_norm.bias")}
    hidden = out["token_embedding.weight"].shape[1]
    out["text_projection"] = torch.eye(hidden)  # ignored by the SD 2.x loader, present in real files
    layers = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.layers.")})
    for i in layers:
        src, dst = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat([sd.pop(f"{src}self_attn.{q}_proj.{kind}") for q in "qkv"])
        for key in [k for k in sd if k.startswith(src)]:
            rest = key[len(src):]
            for new, old in CLIP_NAMES:
                rest = rest.replace(new, old)
            out[dst + rest] = sd.pop(key)
    if sd:
        raise KeyError(f"no OpenCLIP names for text-encoder keys {sorted(sd)[:4]}")
    return out
