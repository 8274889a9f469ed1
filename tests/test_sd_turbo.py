"""The sd-turbo family on tiny random SD 2.x-architecture models: both layouts, offline, LoRAs, training."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from uir_lora.backbones.sd_turbo import CONFIG_DIR, load_sd_turbo
from uir_lora.bank.store import open_bank
from uir_lora.compose.composer import Composition, composed
from uir_lora.errors import BackboneError, BankError
from uir_lora.lab.testing import sd_turbo_tiny as tiny
from uir_lora.lab.testing.banks import make_random_bank

COMFY = Path(os.environ.get("COMFYUI_DIR", "/work/comfy/ComfyUI"))
COMFY_PYTHON = Path(os.environ.get("COMFY_PYTHON", "/work/comfy/venv/bin/python"))


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict[str, Path]:
    """The same tiny weights as a diffusers folder and as an SD 2.x single file (+ its config folder)."""
    root = tmp_path_factory.mktemp("sd_turbo")
    unet, vae, text = tiny.tiny_models(seed=0)
    return {"folder": tiny.write_diffusers_folder(root / "tiny-turbo", unet, vae, text),
            "file": tiny.write_single_file(root / "tiny_turbo.safetensors", unet, vae, text),
            "configs": tiny.write_configs(root / "configs", unet, vae, text), "root": root}


@pytest.fixture(scope="module")
def backbone(layouts):
    return load_sd_turbo(layouts["folder"])


@pytest.fixture()
def image() -> torch.Tensor:
    return torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _restore(backbone, image):
    with torch.no_grad():
        return backbone.restore_step(image, {})


def test_both_layouts_load_offline_to_the_same_model(layouts, backbone, image):
    single = load_sd_turbo(layouts["file"], config_dir=layouts["configs"])
    for a, b in ((backbone.unet, single.unet), (backbone.vae, single.vae)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    # tokenizer path (folder) and the built-in empty-prompt ids (single file) give one conditioning
    assert torch.equal(backbone.prompt_embeds, single.prompt_embeds)
    assert backbone.fingerprint == single.fingerprint
    # one model (its weights match bit for bit above); the restores are compared to float32 rounding, since
    # the two loaders' modules may sum in another order and bit-exactness is not what this test is about
    torch.testing.assert_close(_restore(backbone, image), _restore(single, image), atol=1e-5, rtol=0)


def test_restore_step_is_the_one_step_img2img_turbo_pass(backbone, image):
    out = _restore(backbone, image)
    assert out.shape == image.shape and out.dtype == image.dtype
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    vae, unet = backbone.vae, backbone.unet  # the same pass written out, so a change in the wiring shows
    with torch.no_grad():
        z = vae.encode(image * 2 - 1).latent_dist.mode() * vae.config.scaling_factor
        eps = unet(z, torch.tensor([999]), encoder_hidden_states=backbone.prompt_embeds).sample
        abar = backbone.scheduler.alphas_cumprod[999]
        clean = (z - (1 - abar).sqrt() * eps) / abar.sqrt()
        expected = (vae.decode(clean / vae.config.scaling_factor).sample.clamp(-1, 1) + 1) / 2
    torch.testing.assert_close(out, expected)


def test_half_precision_keeps_the_vae_in_float32(layouts, image):
    half = load_sd_turbo(layouts["folder"])
    fingerprint = half.fingerprint
    half.to(dtype=torch.float16)
    assert half.dtype == torch.float16 and half.vae_dtype == torch.float32  # SD's VAE overflows in fp16
    out = _restore(half, image)
    assert out.dtype == image.dtype and torch.isfinite(out).all()
    half.to(dtype=torch.bfloat16)
    assert half.vae_dtype == torch.bfloat16 and half.fingerprint == fingerprint


def test_fingerprint_tracks_the_weights(layouts, backbone, tmp_path):
    unet, vae, text = tiny.tiny_models(seed=0)
    with torch.no_grad():
        unet.conv_out.weight[0, 0, 0, 0] += 1e-3  # one changed value in a sampled position
    other = load_sd_turbo(tiny.write_diffusers_folder(tmp_path / "other", unet, vae, text))
    assert other.fingerprint != backbone.fingerprint


@pytest.mark.parametrize("name", ["missing_dir", "missing.safetensors"])
def test_missing_weights_name_the_file_and_folders(tmp_path, name):
    with pytest.raises(BackboneError, match=r"sd_turbo\.safetensors.*models/checkpoints.*model_index\.json"):
        load_sd_turbo(tmp_path / name)


def test_wrong_files_are_refused_with_a_reason(tmp_path, layouts):
    from safetensors.torch import save_file

    (tmp_path / "sd.ckpt").write_bytes(b"pickle")
    with pytest.raises(BackboneError, match="no pickles"):
        load_sd_turbo(tmp_path / "sd.ckpt")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "lora.safetensors"))
    with pytest.raises(BackboneError, match="not a full Stable Diffusion checkpoint"):
        load_sd_turbo(tmp_path / "lora.safetensors")
    with pytest.raises(BackboneError, match="do not fit"):  # tiny weights read with the real SD-Turbo configs
        load_sd_turbo(layouts["file"], config_dir=CONFIG_DIR)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model_index.json").write_text("{}")
    with pytest.raises(BackboneError, match="no unet/ subfolder"):
        load_sd_turbo(tmp_path / "half")


@pytest.fixture()
def bank(tmp_path, backbone):
    return open_bank(make_random_bank(tmp_path, backbone, ("rain", "haze"), rank=2, seed=3, bank_name="turbo"))


def test_lora_files_use_the_kohya_layout_and_round_trip(bank, backbone, layouts):
    from safetensors.torch import load_file

    state = load_file(str(bank.root / "rain.safetensors"))
    assert all(k.startswith(("lora_unet_", "lora_vae_decoder_")) for k in state)
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0.lora_down.weight" in state
    assert "lora_vae_decoder_mid_block_attentions_0_to_q.lora_up.weight" in state
    assert "lora_vae_decoder_conv_in.alpha" in state and "lora_unet_conv_in.alpha" not in state
    fresh = load_sd_turbo(layouts["file"], config_dir=layouts["configs"])  # the other layout, same weights
    adapters = bank.attach(fresh)
    back = fresh.adapter_state(adapters["rain"])
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)


def test_a_file_with_another_alpha_applies_the_same_delta(backbone, bank):
    from uir_lora.backbones.sd_turbo_keys import kohya_to_peft

    adapter = bank.attach(backbone)["rain"]
    state = backbone.adapter_state(adapter)
    halved = {k: (v / 2 if k.endswith(".lora_up.weight") else v * 2 if k.endswith(".alpha") else v)
              for k, v in state.items()}
    a, b = kohya_to_peft(backbone.parts, adapter, state), kohya_to_peft(backbone.parts, adapter, halved)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k]) for k in a)


def test_compose_fused_matches_unfused_and_restores_bit_exact(backbone, bank, image):
    weights = {"rain": 0.8, "haze": -0.6}
    base_state = {k: v.clone() for k, v in backbone.adapter_root.state_dict().items()}
    base = _restore(backbone, image)
    outputs = {}
    for fused in (True, False, True):  # A-B-A: fused, unfused, fused again
        with composed(backbone, Composition(bank, weights, fused=fused)):
            outputs.setdefault(fused, []).append(_restore(backbone, image))
        after = backbone.adapter_root.state_dict()
        assert all(torch.equal(after[k], v) for k, v in base_state.items())
        assert torch.equal(_restore(backbone, image), base)
    fused_out, unfused_out = outputs[True][0], outputs[False][0]
    assert (fused_out - base).abs().max() > 1e-3  # the LoRAs do something
    torch.testing.assert_close(fused_out, unfused_out, atol=2e-5, rtol=0)
    assert torch.equal(outputs[True][0], outputs[True][1])


def test_bank_of_other_weights_is_refused(tmp_path, bank):
    unet, vae, text = tiny.tiny_models(seed=1)
    other = load_sd_turbo(tiny.write_diffusers_folder(tmp_path / "seed1", unet, vae, text))
    with pytest.raises(BankError, match="trained on backbone weights"):
        bank.attach(other)


def test_generic_trainer_trains_a_lora_that_survives_a_bank_round_trip(tmp_path, layouts, image):
    from peft import LoraConfig
    from torch.utils.data import TensorDataset

    from uir_lora.bank.manifest import EncoderSpec, LoraEntry
    from uir_lora.bank.writer import add_lora, create_bank
    from uir_lora.lab.train.trainer import TrainConfig, train_lora

    trained = load_sd_turbo(layouts["folder"])
    trained.enable_gradient_checkpointing()
    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(4, 3, 16, 16, generator=gen)
    data = TensorDataset((clean + 0.1 * torch.randn(clean.shape, generator=gen)).clamp(0, 1), clean)
    config = LoraConfig(r=2, lora_alpha=2.0, target_modules=list(trained.default_lora_targets))
    stats = train_lora(trained, "denoise", config, data, {}, TrainConfig(steps=3, batch=2, lr=1e-2, bf16=True),
                       log=lambda _: None)
    assert stats["steps"] == 2 and all(torch.isfinite(torch.tensor(stats["losses"])))  # 4 pairs, batch 2
    state = trained.adapter_state("denoise")
    assert any(float(v.abs().max()) > 0 for k, v in state.items() if k.endswith("lora_up.weight"))

    entry = LoraEntry(name="denoise", file="denoise.safetensors", rank=2, alpha=2.0,
                      target_modules=list(trained.default_lora_targets), embedding=[1.0, 0.0])
    bank_dir = tmp_path / "trained"
    create_bank(bank_dir, "trained", trained.family, trained.fingerprint, EncoderSpec(dim=2, feature_mean=[0.0] * 2,
                                                                                      feature_std=[1.0] * 2))
    add_lora(bank_dir, entry, state)
    fresh = load_sd_turbo(layouts["file"], config_dir=layouts["configs"])
    with composed(fresh, Composition(open_bank(bank_dir), {"denoise": 1.0}, fused=False)):
        reloaded = _restore(fresh, image)
    for layer in trained.lora_layers():
        layer.enable_adapters(True)
        layer.set_adapter("denoise")
    torch.testing.assert_close(reloaded, _restore(trained, image))


def test_registry_loads_the_family(layouts):
    from uir_lora.backbones.registry import load_backbone

    assert load_backbone("sd-turbo", layouts["folder"]).family == "sd-turbo"
    with pytest.raises(BackboneError, match="models/diffusers"):
        load_backbone("sd-turbo", layouts["root"] / "nowhere")


def test_shipped_configs_are_the_sd_turbo_architecture():
    """Build the real-size models on the meta device: parameter counts of SD 2.1 / SD-Turbo."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(CONFIG_DIR / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(CONFIG_DIR / "vae"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(CONFIG_DIR / "text_encoder"))
    counts = [sum(p.numel() for p in m.parameters()) for m in (unet, vae, text)]
    assert counts == [865_910_724, 83_653_863, 340_387_840]
    assert vae.config.scaling_factor == 0.18215
    assert json.loads((CONFIG_DIR / "scheduler" / "scheduler_config.json").read_text())["num_train_timesteps"] == 1000


@pytest.mark.slow  # a subprocess imports the whole of ComfyUI
@pytest.mark.skipif(not (COMFY / "comfy" / "lora.py").is_file() or not COMFY_PYTHON.is_file(),
                    reason="needs a ComfyUI checkout and its Python (COMFYUI_DIR, COMFY_PYTHON)")
def test_comfyui_core_load_lora_maps_every_unet_key(bank, layouts):
    """ComfyUI's own key map (comfy/lora.py) for this UNet: every lora_unet_* key must land on a weight."""
    script = f"""
import json, logging, sys, types
sys.path.insert(0, {str(COMFY)!r})
from comfy.cli_args import args
args.cpu = True
import comfy.lora
from safetensors.torch import load_file
missing = []
handler = logging.Handler()
handler.emit = lambda record: missing.append(record.getMessage().split(": ", 1)[-1])
logging.getLogger().addHandler(handler)
import comfy.model_detection
checkpoint = load_file({str(layouts["file"])!r})  # ComfyUI reads the UNet's shape off the single file
config = comfy.model_detection.detect_unet_config(checkpoint, "model.diffusion_model.")
model = types.SimpleNamespace(state_dict=dict, model_config=types.SimpleNamespace(unet_config=config))
lora = load_file({str(bank.root / "rain.safetensors")!r})
patches = comfy.lora.load_lora(lora, comfy.lora.model_lora_keys_unet(model, {{}}))
print(json.dumps({{"patched": len(patches), "not_loaded": sorted(missing)}}))
"""
    run = subprocess.run([str(COMFY_PYTHON), "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    from safetensors.torch import load_file

    lora = load_file(str(bank.root / "rain.safetensors"))
    unet_modules = {k.split(".")[0] for k in lora if k.startswith("lora_unet_")}
    assert result["patched"] == len(unet_modules) > 0
    assert result["not_loaded"] and all(k.startswith("lora_vae_decoder_") for k in result["not_loaded"])
