"""Tier 2: the pack inside a real ComfyUI, in-process (no HTTP server, no browser).

Skipped unless COMFYUI_DIR points at a ComfyUI checkout. Run with an interpreter that has ComfyUI's
and the pack's requirements, e.g. the e2e harness venv (pyproject's addopts need pytest-socket)::

    COMFYUI_DIR=/work/comfy/ComfyUI /work/comfy/venv/bin/python -m pytest -q -o addopts="" \
        tests/test_comfyui_inprocess.py

The pack is loaded with ``nodes.load_custom_node`` as at server start; nodes are called directly,
and every shipped API workflow is validated and executed by ComfyUI's own executor. A bank a
workflow names that is not shipped yet is stood in for by random LoRAs of the same name (the test
checks the plumbing, not restoration quality). Adapted from the shared comfyui_inprocess_example.py;
see reference/comfyui.md section 11 for why the imports happen in this order.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import uuid
from importlib import import_module
from pathlib import Path

import pytest

PACK_DIR = Path(os.environ.get("PACK_DIR") or Path(__file__).resolve().parents[1])
EXPECTED_NODE_IDS = {"UIR_BackboneLoader", "UIR_LoraBankLoader", "UIR_DegradationEstimator", "UIR_LoraComposer",
                     "UIR_Restore", "UIR_SyntheticDegrade", "UIR_Compare", "UIR_ExampleImage"}
API_WORKFLOWS = sorted((PACK_DIR / "workflows" / "api").glob("*.json"))
COMFYUI_DIR = os.environ.get("COMFYUI_DIR", "")
pytestmark = pytest.mark.skipif(
    not (COMFYUI_DIR and os.path.isfile(os.path.join(COMFYUI_DIR, "main.py"))),
    reason="set COMFYUI_DIR to a ComfyUI checkout to run the in-process ComfyUI tests",
)


class Comfy:
    def __init__(self, nodes, server, execution, folder_paths, pack_node_ids, loop, models):
        self.nodes, self.server, self.execution, self.folder_paths = nodes, server, execution, folder_paths
        self.pack_node_ids, self.loop, self.models = pack_node_ids, loop, models

    def cls(self, node_id):
        return self.nodes.NODE_CLASS_MAPPINGS[node_id]


@pytest.fixture(scope="module")
def comfy():
    sys.path.insert(0, COMFYUI_DIR)
    from comfy.cli_args import args

    args.cpu = True
    args.front_end_root = tempfile.mkdtemp(prefix="comfy_fe_")
    for name in ("utils.extra_config", "server", "nodes"):  # this order: nodes.py changes sys.path
        import_module(name)
    import execution
    import folder_paths
    import server

    import nodes

    tmp = Path(tempfile.mkdtemp(prefix="comfy_io_"))
    for kind in ("output", "temp"):
        (tmp / kind).mkdir()
    folder_paths.set_output_directory(str(tmp / "output"))
    folder_paths.set_temp_directory(str(tmp / "temp"))
    # as extra_model_paths.yaml would leave it: the pack must keep this path when it registers the key
    folder_paths.add_model_folder_path("uir_lora", str(tmp / "uir_lora"))
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server.PromptServer(loop)
    before = set(nodes.NODE_CLASS_MAPPINGS)
    assert loop.run_until_complete(nodes.load_custom_node(str(PACK_DIR))), "pack failed to import (see log)"
    yield Comfy(nodes, server, execution, folder_paths, set(nodes.NODE_CLASS_MAPPINGS) - before, loop, tmp)
    loop.close()


@pytest.fixture(scope="module")
def engine(comfy):
    """The pack's engine as ComfyUI imported it (same module objects the nodes use)."""
    module = sys.modules[comfy.cls("UIR_Restore").__module__.rsplit(".nodes.", 1)[0]]
    return module.uir_lora


@pytest.fixture(scope="module")
def stand_in_banks(comfy, engine):
    """Random banks under models/uir_lora for every bank a workflow names that is not shipped."""
    make_random_bank = import_module(engine.__name__ + ".testing.banks").make_random_bank
    encoder = import_module(engine.__name__ + ".router.encoder")
    backbone = engine.pipeline.default_backbone()
    named = {n["inputs"]["bank"] for p in API_WORKFLOWS for n in json.loads(p.read_text()).values()
             if n["class_type"] == "UIR_LoraBankLoader"} | {"tiny"}
    made = sorted(named - set(engine.pipeline.list_banks()))
    for bank in made:
        make_random_bank(comfy.models / "uir_lora", backbone, dim=encoder.DegradationEncoder().dim, bank_name=bank)
    return made


def test_pack_registers_nodes_and_model_folder(comfy):
    assert comfy.pack_node_ids == EXPECTED_NODE_IDS
    paths, extensions = comfy.folder_paths.folder_names_and_paths["uir_lora"]
    assert str(comfy.models / "uir_lora") in paths and ".safetensors" in extensions and ".json" not in extensions
    for nid in sorted(comfy.pack_node_ids):
        cls = comfy.cls(nid)
        json.dumps(cls.INPUT_TYPES())  # /object_info must be JSON-serialisable
        assert cls.CATEGORY == "image/restoration" and cls.GET_SCHEMA().node_id == nid


def test_restore_chain_reports_progress_and_stops_on_interrupt(comfy, stand_in_banks):
    import comfy.model_management as mm
    import comfy.utils as cu
    import torch

    backbone = comfy.cls("UIR_BackboneLoader").execute("embedded-ffdnet (built in)", "auto", "fp32")[0]
    bank = comfy.cls("UIR_LoraBankLoader").execute(backbone, "tiny")[0]
    composition = comfy.cls("UIR_LoraComposer").execute(bank, "manual", "noise=1", True)[0]
    image = torch.rand(2, 96, 80, 3, generator=torch.Generator().manual_seed(0))
    progress = []
    cu.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: progress.append((value, total)))
    try:
        out = comfy.cls("UIR_Restore").execute(image, backbone, composition, 1.0, 64, 0, False)[0]
    finally:
        cu.set_progress_bar_global_hook(None)
    assert out.shape == image.shape and out.dtype == torch.float32 and out.device.type == "cpu"
    assert progress and progress[-1][0] == progress[-1][1] >= 4
    comfy.nodes.interrupt_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            comfy.cls("UIR_Restore").execute(image, backbone, composition, 1.0, 64, 0, False)
    finally:
        comfy.nodes.interrupt_processing(False)


def run_prompt(comfy, prompt: dict):
    ex = comfy.execution
    prompt_id = uuid.uuid4().hex
    valid, error, outputs, node_errors = comfy.loop.run_until_complete(ex.validate_prompt(prompt_id, prompt, None))
    assert valid, f"validation failed: {error} {node_errors}"
    executor = ex.PromptExecutor(comfy.server.PromptServer.instance, cache_type=ex.CacheType.CLASSIC)
    comfy.loop.run_until_complete(executor.execute_async(prompt, prompt_id, {}, outputs))
    errors = [d for kind, d in executor.status_messages if kind in ("execution_error", "execution_interrupted")]
    assert executor.success and not errors, errors[0].get("traceback") if errors else "failed"
    return executor.history_result["outputs"]


@pytest.mark.parametrize("path", API_WORKFLOWS, ids=lambda p: p.stem)
def test_shipped_workflow_runs_in_comfyui(comfy, stand_in_banks, path):
    prompt = json.loads(path.read_text())
    for node in prompt.values():
        if node["class_type"] == "UIR_BackboneLoader":
            message = comfy.cls("UIR_BackboneLoader").validate_inputs(node["inputs"]["backbone"])
            if message is not True:
                pytest.skip(f"needs user weights: {message}")
    outputs = run_prompt(comfy, prompt)
    saved = [nid for nid, n in prompt.items() if n["class_type"] in ("SaveImage", "PreviewImage")]
    assert saved and all(outputs[nid]["images"] for nid in saved)
    estimators = [nid for nid, n in prompt.items() if n["class_type"] == "UIR_DegradationEstimator"]
    for nid in estimators:  # the web extension reads these from the executed event
        assert outputs[nid]["uir_weights"] and outputs[nid]["images"]


def test_missing_backbone_file_is_reported_by_validation(comfy):
    prompt = {"1": {"class_type": "UIR_BackboneLoader",
                    "inputs": {"backbone": "sd-turbo | checkpoints/not-there.safetensors", "device": "cpu",
                               "dtype": "fp32"}},
              "2": {"class_type": "UIR_LoraBankLoader", "inputs": {"backbone": ["1", 0], "bank": "tiny"}},
              "3": {"class_type": "UIR_ExampleImage", "inputs": {"image": "astronaut.png"}},
              "4": {"class_type": "UIR_DegradationEstimator",
                    "inputs": {"image": ["3", 0], "bank": ["2", 0], "top_k": 0, "temperature": 0.0,
                               "normalisation": "bank default"}}}
    valid, _error, _outputs, node_errors = comfy.loop.run_until_complete(
        comfy.execution.validate_prompt(uuid.uuid4().hex, prompt, None))
    assert not valid
    assert "models/checkpoints/not-there.safetensors" in json.dumps(node_errors)


def test_core_load_upscale_model_wired_into_the_backbone_loader(comfy, engine):
    """UpscaleModelLoader (core, spandrel) -> UIR Backbone Loader -> a bank made on the same file -> restore."""
    if "UpscaleModelLoader" not in comfy.nodes.NODE_CLASS_MAPPINGS:  # core's extra nodes, as at server start
        extra = os.path.join(COMFYUI_DIR, "comfy_extras", "nodes_upscale_model.py")
        assert comfy.loop.run_until_complete(comfy.nodes.load_custom_node(extra, module_parent="comfy_extras"))
    spandrel_tiny = import_module(engine.__name__ + ".testing.spandrel_tiny")
    make_random_bank = import_module(engine.__name__ + ".testing.banks").make_random_bank
    folder = comfy.models / "upscale_models"  # a second folder, as extra_model_paths.yaml adds one
    comfy.folder_paths.add_model_folder_path("upscale_models", str(folder))
    model_file = spandrel_tiny.write_safetensors(spandrel_tiny.esrgan(4), folder / "uir_test_tiny_x4.safetensors")
    try:
        backbone = engine.backbones.registry.load_backbone("spandrel", model_file)
        make_random_bank(comfy.models / "uir_lora", backbone, ("noise",), rank=2, bank_name="esrgan_tiny")
        options = comfy.cls("UIR_BackboneLoader").INPUT_TYPES()["required"]["backbone"][1]["options"]
        assert "spandrel | upscale_models/uir_test_tiny_x4.safetensors" in options
        prompt = {"1": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": model_file.name}},
                  "2": {"class_type": "UIR_BackboneLoader",
                        "inputs": {"backbone": "embedded-ffdnet (built in)", "device": "cpu", "dtype": "fp32",
                                   "upscale_model": ["1", 0]}},
                  "3": {"class_type": "UIR_LoraBankLoader", "inputs": {"backbone": ["2", 0], "bank": "esrgan_tiny"}},
                  "4": {"class_type": "UIR_LoraComposer",
                        "inputs": {"bank": ["3", 0], "mode": "manual", "weights": "noise=1", "fused": True}},
                  "5": {"class_type": "UIR_ExampleImage", "inputs": {"image": "astronaut.png"}},
                  "6": {"class_type": "UIR_Restore",
                        "inputs": {"image": ["5", 0], "backbone": ["2", 0], "composition": ["4", 0],
                                   "strength": 1.0, "tile": 256, "seed": 0, "spatial": False}},
                  "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}}}
        outputs = run_prompt(comfy, prompt)
        assert outputs["7"]["images"]
    finally:
        model_file.unlink()
