"""The V3 node adapters against fake comfy / comfy_api / folder_paths modules (conftest's pack fixture)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from uir_lora import pipeline
from uir_lora.errors import TEMPERATURE_RANGE, InputError

ROOT = Path(__file__).resolve().parents[1]  # the pack: ComfyUI imports this folder's __init__.py
NODE_IDS = {"UIR_BackboneLoader", "UIR_LoraBankLoader", "UIR_DegradationEstimator", "UIR_LoraComposer",
            "UIR_Restore", "UIR_SyntheticDegrade", "UIR_Compare", "UIR_ExampleImage"}


def run_coroutine(coroutine):
    """Run a coroutine that never awaits anything real (an event loop would open a socket pair)."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the coroutine awaited something")


def test_pack_root_imports_without_comfyui(monkeypatch):
    for name in ("comfy_api", "comfy_api.latest"):
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules makes the import fail
    spec = importlib.util.spec_from_file_location("__init__", ROOT / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.WEB_DIRECTORY == "./web" and not hasattr(module, "comfy_entrypoint")


@pytest.fixture()
def tiny_bank(models, embedded_backbone, encoder_dim) -> str:
    from uir_lora.lab.testing.banks import make_random_bank

    make_random_bank(models / "uir_lora", embedded_backbone, dim=encoder_dim, conditioning={"sigma": 25 / 255})
    return "tiny"


@pytest.fixture()
def loaded(nodes, tiny_bank):
    backbone = nodes["UIR_BackboneLoader"].execute("embedded-ffdnet (built in)", "cpu", "fp32")[0]
    return backbone, nodes["UIR_LoraBankLoader"].execute(backbone, tiny_bank)[0]


@pytest.fixture()
def images(photo) -> torch.Tensor:
    """Two photos as a ComfyUI IMAGE [2,H,W,3]: the clean crop and a noisy one."""
    clean = photo.movedim(1, -1)
    noisy = (clean + torch.randn(clean.shape, generator=torch.Generator().manual_seed(1)) * 0.1).clamp(0, 1)
    return torch.cat([clean, noisy])


def test_entrypoint_registers_nodes_and_keeps_extra_model_paths(pack, models):
    fp = sys.modules["folder_paths"]
    fp.folder_names_and_paths["uir_lora"] = (["/extra/uir"], set())  # as extra_model_paths.yaml leaves it
    node_list = run_coroutine(run_coroutine(pack.comfy_entrypoint()).get_node_list())
    schemas = [cls.GET_SCHEMA() for cls in node_list]
    assert {s.node_id for s in schemas} == NODE_IDS
    assert all(s.category == "image/restoration" and s.display_name for s in schemas)
    paths, extensions = fp.folder_names_and_paths["uir_lora"]
    assert paths == ["/extra/uir"] and ".safetensors" in extensions and ".json" not in extensions


def test_backbone_choices_and_missing_file_message(nodes, models):
    (models / "diffusers" / "sd-turbo").mkdir(parents=True)
    (models / "diffusers" / "sd-turbo" / "model_index.json").write_text("{}")
    (models / "checkpoints").mkdir()
    (models / "checkpoints" / "turbo.safetensors").write_bytes(b"")
    loader = nodes["UIR_BackboneLoader"]
    options = loader.GET_SCHEMA().inputs[0].options
    assert options == ["embedded-ffdnet (built in)", "embedded-realesrgan (built in, converted on first use)",
                       "sd-turbo | diffusers/sd-turbo", "sd-turbo | checkpoints/turbo.safetensors"]
    message = loader.validate_inputs("sd-turbo | checkpoints/missing.safetensors")
    assert "models/checkpoints/missing.safetensors" in message
    assert "model_index.json" in loader.validate_inputs("sd-turbo | diffusers/gone")
    assert loader.validate_inputs(options[0]) is True
    with pytest.raises(ValueError, match="models/checkpoints/missing.safetensors"):
        loader.execute("sd-turbo | checkpoints/missing.safetensors", "cpu", "fp32")


def test_backbone_loader_offers_upscale_models_and_takes_core_upscale_model(nodes, models, tmp_path):
    pytest.importorskip("spandrel")
    import spandrel

    from uir_lora.lab.testing import spandrel_tiny
    from uir_lora.lab.testing.banks import make_random_bank

    folder = models / "upscale_models"
    spandrel_tiny.write_safetensors(spandrel_tiny.esrgan(4), folder / "tiny_x4.safetensors")
    spandrel_tiny.write_pth(spandrel_tiny.esrgan(2), folder / "sub" / "tiny_x2.pth")
    (folder / "notes.txt").write_text("not a model")
    extra = tmp_path / "extra_upscale"  # a second folder, as extra_model_paths.yaml adds one
    spandrel_tiny.write_safetensors(spandrel_tiny.swinir(), extra / "tiny_swinir.safetensors")
    fp = sys.modules["folder_paths"]
    fp.folder_names_and_paths["upscale_models"][0].append(str(extra))
    loader = nodes["UIR_BackboneLoader"]
    options = loader.GET_SCHEMA().inputs[0].options
    assert options[2:] == ["spandrel | upscale_models/sub/tiny_x2.pth",
                           "spandrel | upscale_models/tiny_swinir.safetensors",
                           "spandrel | upscale_models/tiny_x4.safetensors"]
    assert "UPSCALE_MODEL" in [i.io_type for i in loader.GET_SCHEMA().inputs]
    from_list = loader.execute("spandrel | upscale_models/tiny_x4.safetensors", "cpu", "fp32")[0]
    assert (from_list.family, from_list.architecture, from_list.scale) == ("spandrel", "ESRGAN", 4)
    assert loader.execute("spandrel | upscale_models/tiny_swinir.safetensors", "cpu", "fp32")[0].scale == 1
    assert "models/upscale_models/gone.pth" in loader.validate_inputs("spandrel | upscale_models/gone.pth")
    assert "is not one of" in loader.validate_inputs("spandrel | checkpoints/tiny_x4.safetensors")

    # core's Load Upscale Model output: the same weights, so a bank made on the file attaches to it
    descriptor = spandrel.ModelLoader().load_from_file(str(folder / "tiny_x4.safetensors"))
    wired = loader.execute(options[0], "cpu", "fp32", upscale_model=descriptor)[0]
    assert wired.fingerprint == from_list.fingerprint and wired.descriptor is not descriptor
    make_random_bank(models / "uir_lora", from_list, ("noise",), rank=2, bank_name="esrgan")
    bank = nodes["UIR_LoraBankLoader"].execute(wired, "esrgan")[0]
    assert bank.manifest.backbone_family == "spandrel"
    assert not any("lora" in name for name, _ in descriptor.model.named_modules())  # core's model untouched
    with pytest.raises(ValueError, match="ImageModelDescriptor"):
        loader.execute(options[0], "cpu", "fp32", upscale_model=object())


def test_two_backbone_loaders_keep_their_own_dtype(nodes):
    loader = nodes["UIR_BackboneLoader"]
    first = loader.execute("embedded-ffdnet (built in)", "cpu", "fp32")[0]
    second = loader.execute("embedded-ffdnet (built in)", "cpu", "bf16")[0]
    assert first.dtype == torch.float32 and second.dtype == torch.bfloat16


def test_bank_loader_lists_model_folder_and_refuses_foreign_weights(nodes, loaded, models, tiny_bank):
    backbone, bank = loaded
    assert bank.manifest.names == ["noise", "haze", "jpeg"]
    assert tiny_bank in nodes["UIR_LoraBankLoader"].GET_SCHEMA().inputs[1].options
    manifest = models / "uir_lora" / tiny_bank / "manifest.json"
    data = json.loads(manifest.read_text())
    data["backbone_fingerprint"] = "0" * 64
    manifest.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="trained on backbone weights"):
        nodes["UIR_LoraBankLoader"].execute(backbone, tiny_bank)


def test_user_banks_in_extra_model_paths_are_listed_and_their_own_kinds_shown(nodes, models, embedded_backbone,
                                                                             encoder_dim, images):
    """A bank made with `train-lora --pairs` in a folder extra_model_paths.yaml names: the loader lists it and the
    estimator shows its kind by the manifest's name, like any other."""
    from uir_lora.lab.testing.banks import make_random_bank

    elsewhere = models / "elsewhere" / "uir_lora"
    sys.modules["folder_paths"].folder_names_and_paths["uir_lora"] = ([str(elsewhere)], set())
    make_random_bank(elsewhere, embedded_backbone, names=("noise", "scratches"), dim=encoder_dim, bank_name="scans")
    loader = nodes["UIR_LoraBankLoader"]
    assert "scans" in loader.GET_SCHEMA().inputs[1].options
    backbone = nodes["UIR_BackboneLoader"].execute("embedded-ffdnet (built in)", "cpu", "fp32")[0]
    bank = loader.execute(backbone, "scans")[0]
    out = nodes["UIR_DegradationEstimator"].execute(images, bank, 2, 0.0, "bank default")
    assert "scratches" in out.args[2] and out.ui["uir_weights"][0]["names"] == ["noise", "scratches"]


def test_estimator_outputs_routing_chart_table_and_ui_weights(nodes, loaded, images):
    _, bank = loaded
    out = nodes["UIR_DegradationEstimator"].execute(images, bank, 2, 0.1, "softmax")
    routing, chart, table = out.args
    assert len(routing) == 2 and all(len(r.weights) == 2 for r in routing)
    assert chart.ndim == 4 and chart.shape[0] == 2 and chart.shape[-1] == 3 and 0 <= chart.min() <= chart.max() <= 1
    assert "image 1" in table and all(name in table for name in bank.manifest.names)
    weights = json.loads(json.dumps(out.ui["uir_weights"]))
    assert "images" not in out.ui and len(weights) == 2  # drawn once, by web/uir_lora.js; no chart preview too
    assert sum(weights[0]["weights"]) == pytest.approx(1.0, abs=1e-3)
    assert weights[0]["names"] == list(routing[0].similarities)
    assert weights[0]["left_out"] == [] and "restore:" not in table  # the tiny bank sets no follower floor


def test_estimator_marks_what_the_restore_leaves_out(nodes, loaded, images, monkeypatch):
    _, bank = loaded
    # every second kind is too weak: the restore applies the first only (the bank object may be cached: undone after)
    monkeypatch.setattr(bank.manifest.router, "follower_floor", 1.0)
    out = nodes["UIR_DegradationEstimator"].execute(images, bank, 2, 1.0, "sigmoid")
    routing, _, table = out.args
    weights = out.ui["uir_weights"]
    for result, drawn in zip(routing, weights):
        first, second = sorted(result.weights, key=result.weights.get, reverse=True)
        assert drawn["left_out"] == [second], "the router keeps both; the restore leaves the weaker out"
        assert f"restore: {second} (" in table


def test_estimator_temperature_matches_the_router(nodes, random_bank, photo):
    estimator = nodes["UIR_DegradationEstimator"]
    widget = next(i for i in estimator.GET_SCHEMA().inputs if i.id == "temperature")
    assert widget.min == 0 and widget.default == 0 and widget.max == TEMPERATURE_RANGE[1]  # 0 = bank default
    low, high = TEMPERATURE_RANGE
    for fine in (0, 0.0, low, high, None):  # None: a linked value, checked when the node runs
        assert estimator.validate_inputs(fine) is True
    for bad in (low / 2, 1e-9, -0.5, high * 1.01, float("nan")):
        message = estimator.validate_inputs(bad)
        assert isinstance(message, str) and "temperature" in message and "bank's default" in message
    # the router accepts exactly what the node lets through
    assert pipeline.estimate(random_bank, photo, 2, low)[0].temperature == low
    with pytest.raises(InputError, match="temperature"):
        pipeline.estimate(random_bank, photo, 2, low / 2)


def test_composer_modes(nodes, loaded, images):
    _, bank = loaded
    routing = nodes["UIR_DegradationEstimator"].execute(images, bank, 0, 0.0, "bank default")[0]
    composer = nodes["UIR_LoraComposer"]
    auto = composer.execute(bank, "auto", "noise=1", True, routing)[0]
    assert len(auto) == 2 and auto[0].source == "router" and auto[0].weights == routing[0].weights
    (manual,) = composer.execute(bank, "manual", "noise=0.7, jpeg=0.3", False)[0]
    assert manual.weights == {"noise": 0.7, "jpeg": 0.3} and not manual.fused
    bias = composer.execute(bank, "bias", "haze=0.5", True, routing)[0]
    assert bias[0].weights["haze"] == pytest.approx(routing[0].weights.get("haze", 0.0) + 0.5)
    with pytest.raises(ValueError, match="needs the routing input"):
        composer.execute(bank, "auto", "", True)
    with pytest.raises(ValueError, match="unknown LoRA 'rain'"):
        composer.execute(bank, "manual", "rain=1", True)
    with pytest.raises(ValueError, match="could not read"):
        composer.execute(bank, "manual", "noise:1", True)


def test_restore_shapes_progress_strength_and_interrupt(nodes, loaded, images, comfy_fakes):
    backbone, bank = loaded
    (composition,) = nodes["UIR_LoraComposer"].execute(bank, "manual", "noise=1", True)
    restore = nodes["UIR_Restore"]
    (out,) = restore.execute(images, backbone, composition, 1.0, 64, 0, False).args
    assert out.shape == images.shape and out.dtype == torch.float32 and 0 <= out.min() <= out.max() <= 1
    assert (out - images).abs().mean() > 1e-3  # it did restore something
    done, total = comfy_fakes.ProgressBar.updates[-1]
    assert done == total and total >= 2 * 4  # 96x128 in 64 px tiles: several tiles per image
    (same,) = restore.execute(images, backbone, composition, 0.0, 512, 0, False).args
    assert torch.allclose(same, images, atol=1e-6)
    comfy_fakes.Interrupt.pending = True
    with pytest.raises(comfy_fakes.InterruptProcessingException):
        restore.execute(images, backbone, composition, 1.0, 64, 0, False)
    (again,) = restore.execute(images, backbone, composition, 1.0, 64, 0, False).args
    assert torch.equal(again, out)  # the interrupt left the backbone in its base state


def test_restore_blends_an_unsure_composition_towards_the_input(nodes, loaded, images):
    """Do no harm reaches the node: a composition's confidence scales its strength, per image."""
    backbone, bank = loaded
    (composition,) = nodes["UIR_LoraComposer"].execute(bank, "manual", "noise=1", True)
    sure, unsure, half = (dataclasses.replace(composition[0], confidence=c) for c in (1.0, 0.0, 0.5))
    restore = nodes["UIR_Restore"]
    (full,) = restore.execute(images, backbone, [sure, sure], 1.0, 512, 0, False).args
    (out,) = restore.execute(images, backbone, [unsure, half], 1.0, 512, 0, False).args
    assert torch.allclose(out[0], images[0], atol=1e-6)
    assert torch.allclose(out[1], (images[1] + 0.5 * (full[1] - images[1])).clamp(0, 1), atol=1e-5)


def test_restore_spatial_is_explicit(nodes, loaded, images, pack, comfy_fakes, caplog):
    backbone, bank = loaded
    routing = nodes["UIR_DegradationEstimator"].execute(images, bank, 0, 0.0, "bank default")[0]
    auto = nodes["UIR_LoraComposer"].execute(bank, "auto", "", True, routing)[0]
    biased = nodes["UIR_LoraComposer"].execute(bank, "bias", "noise=0.5", True, routing)[0]
    restore = nodes["UIR_Restore"]
    with caplog.at_level("INFO"):
        (out,) = restore.execute(images, backbone, auto, 1.0, 64, 0, True).args
    assert out.shape == images.shape and 0 <= out.min() <= out.max() <= 1
    logged = [r.getMessage() for r in caplog.records if "UIR per-region restore" in r.getMessage()]
    assert len(logged) == len(images) and all("per-region routing: 192 px windows" in m for m in logged)
    assert comfy_fakes.ProgressBar.updates[-1][0] == comfy_fakes.ProgressBar.updates[-1][1]
    with pytest.raises(ValueError, match="mode 'auto'"):
        restore.execute(images, backbone, biased, 1.0, 64, 0, True)


def test_synthetic_degrade_and_compare(nodes, images):
    clean = images[:1]
    degrade = nodes["UIR_SyntheticDegrade"]
    first = degrade.execute(clean, "noise", "jpeg", 0.5, 3)[0]
    assert first.shape == clean.shape and torch.equal(first, degrade.execute(clean, "noise", "jpeg", 0.5, 3)[0])
    assert not torch.equal(first, degrade.execute(clean, "noise", "none", 0.5, 3)[0])
    out = nodes["UIR_Compare"].execute(first, clean)
    report, psnr, ssim = out.args
    mse = float(((first - clean) ** 2).mean())
    assert psnr == pytest.approx(10 * math.log10(1 / mse), abs=1e-3) and 0 < ssim < 1
    assert f"{psnr:.2f}" in report and out.ui["text"] == (report,)
    assert len(out.ui["images"]) == 1  # the image beside its reference, previewed on the node
    with pytest.raises(ValueError, match="same size"):
        nodes["UIR_Compare"].execute(first, clean[:, :40])


def test_example_images_ship_with_the_pack(nodes):
    node = nodes["UIR_ExampleImage"]
    options = node.GET_SCHEMA().inputs[0].options
    assert {"astronaut.png", "chelsea_noise25.png", "coffee_jpeg10.jpg"} <= set(options)
    (image,) = node.execute("astronaut.png").args
    assert image.shape == (1, 320, 320, 3) and image.dtype == torch.float32
    with pytest.raises(ValueError, match=r"\.\."):
        node.execute("../README.md")
    assert all(Path(ROOT, "workflows", "inputs", o).stat().st_size < 300_000 for o in options)


def test_every_input_and_output_has_a_tooltip(nodes):
    missing = [f"{node_id}.{i.id}" for node_id, cls in nodes.items() for i in cls.GET_SCHEMA().inputs
               if not i.extra.get("tooltip")]
    missing += [f"{node_id} output {o.display_name}" for node_id, cls in nodes.items()
                for o in cls.GET_SCHEMA().outputs if not o.tooltip]
    assert not missing, missing


def test_every_node_has_a_help_page(nodes):
    docs = ROOT / "web" / "docs"
    for node_id, cls in nodes.items():
        page = (docs / f"{node_id}.md").read_text()
        schema = cls.GET_SCHEMA()
        assert page.startswith(f"# {schema.display_name}\n")
        absent = [i.id for i in schema.inputs if f"**{i.id}**" not in page]
        assert not absent, f"{node_id}.md does not describe {absent}"


def test_compare_previews_each_image_beside_its_reference(pack):
    images = torch.rand(2, 3, 16, 20)
    pairs = pack.nodes.utilities.side_by_side(images, torch.zeros(1, 3, 16, 20), gap=4)
    assert pairs.shape == (2, 3, 16, 44)
    assert torch.equal(pairs[..., :20], images) and (pairs[..., 20:24] == 1).all() and (pairs[..., 24:] == 0).all()


def test_backbone_combo_offers_only_sd_turbo_checkpoints(nodes, models, tiny_bank):
    (models / "checkpoints").mkdir()
    for name in ("sd_xl_base_1.0.safetensors", "sd_turbo.safetensors", "sd_xl_turbo_1.0.safetensors",
                 "v1-5-pruned.safetensors", "My-SD-Turbo-fp16.safetensors"):
        (models / "checkpoints" / name).write_bytes(b"")
    loader = nodes["UIR_BackboneLoader"]
    assert loader.GET_SCHEMA().inputs[0].options == ["embedded-ffdnet (built in)",
                                                     "embedded-realesrgan (built in, converted on first use)",
                                                     "sd-turbo | checkpoints/My-SD-Turbo-fp16.safetensors",
                                                     "sd-turbo | checkpoints/sd_turbo.safetensors"]
    # no sd-turbo bank yet: refused up front, naming the bank to train, before any weights load
    message = loader.validate_inputs("sd-turbo | checkpoints/sd_turbo.safetensors")
    assert "no LoRA bank for the sd-turbo backbone" in message and "uir-lora train-lora" in message
    both = loader.validate_inputs("sd-turbo | checkpoints/gone.safetensors")
    assert "models/checkpoints/gone.safetensors" in both and "uir-lora train-lora" in both
    manifest = models / "uir_lora" / tiny_bank / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "backbone_family": "sd-turbo"}))
    assert loader.validate_inputs("sd-turbo | checkpoints/sd_turbo.safetensors") is True
    # a name the combo hides is still the user's choice: accepted here, its layout checked when it loads
    assert loader.validate_inputs("sd-turbo | checkpoints/sd_xl_base_1.0.safetensors") is True


def test_banks_for_family_reads_each_manifest(models, tiny_bank):
    roots = [models / "uir_lora"]
    assert tiny_bank in pipeline.banks_for_family("embedded-ffdnet", roots)
    assert pipeline.banks_for_family("sd-turbo", roots) == []
    (models / "uir_lora" / "broken").mkdir()
    (models / "uir_lora" / "broken" / "manifest.json").write_text("{not json")
    assert "broken" not in pipeline.banks_for_family("embedded-ffdnet", roots)


def test_routing_values_never_print_minus_zero():
    from uir_lora.router.router import RoutingResult, plain

    assert [plain(v, 2) for v in (-0.0, -0.004, 0.004, -0.006, 0.5)] == ["0.00", "0.00", "0.00", "-0.01", "0.50"]
    result = RoutingResult(similarities={"noise": 0.3, "haze": -0.0004}, weights={"noise": 1.0, "haze": -0.0},
                           top_k=1, temperature=0.01, normalisation="softmax")
    assert "-0.000" not in result.table()


def load_root(monkeypatch, comfy_present: bool):
    monkeypatch.setitem(sys.modules, "comfy_api", None)
    monkeypatch.setitem(sys.modules, "comfy_api.latest", None)
    if comfy_present:
        monkeypatch.setitem(sys.modules, "comfy", sys.modules.get("comfy") or object())
    else:
        monkeypatch.delitem(sys.modules, "comfy", raising=False)
    spec = importlib.util.spec_from_file_location("uir_root_under_test", ROOT / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_older_comfyui_gets_one_line_naming_the_version_needed(monkeypatch, caplog):
    with caplog.at_level("ERROR"):
        module = load_root(monkeypatch, comfy_present=True)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "0.3.60" in lines[0] and "update ComfyUI" in lines[0]
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'requires-comfyui = ">={module.REQUIRES_COMFYUI}"' in pyproject
    caplog.clear()
    with caplog.at_level("ERROR"):
        load_root(monkeypatch, comfy_present=False)  # a plain import outside ComfyUI (pytest) stays quiet
    assert not caplog.records
