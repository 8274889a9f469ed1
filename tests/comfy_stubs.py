"""Small fakes of the ComfyUI modules the nodes use (comfy_api.latest, comfy.*, folder_paths).

They mirror the V3 API surface the pack touches (comfy_api/latest/_io.py of ComfyUI 0.3.64), record
progress updates, and let a test raise an interrupt. ``stubbed_pack`` imports the pack as a package
(nodes/ use relative imports) against these fakes.

A support module, not a test module: tests reach it through the fixtures of tests/conftest.py, and
tools/make_workflows.py imports it to build the shipped workflows.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

PACK_DIR = Path(__file__).resolve().parents[1]
PACK_NAME = "uir_pack_under_test"
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


class InterruptProcessingException(Exception):
    pass


@dataclass
class Input:
    id: str
    io_type: str
    optional: bool = False
    options: list | None = None
    default: object = None
    min: float | None = None
    max: float | None = None
    control_after_generate: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def is_widget(self) -> bool:
        return self.io_type in WIDGET_TYPES


@dataclass
class Output:
    io_type: str
    display_name: str | None = None
    tooltip: str | None = None


def _comfy_type(io_type: str) -> type:
    def make_input(id, optional=False, options=None, default=None, min=None, max=None,
                   control_after_generate=False, **extra):
        if io_type == "COMBO" and default is None and options:
            default = options[0]
        return Input(id, io_type, optional, options, default, min, max, bool(control_after_generate), extra)

    def make_output(id=None, display_name=None, tooltip=None, **_):
        return Output(io_type, display_name, tooltip)

    return type(io_type, (), {"io_type": io_type, "Input": staticmethod(make_input),
                              "Output": staticmethod(make_output)})


@dataclass
class Schema:
    node_id: str
    display_name: str = ""
    category: str = ""
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    description: str = ""
    is_output_node: bool = False
    hidden: list = field(default_factory=list)


class ComfyNode:
    @classmethod
    def GET_SCHEMA(cls) -> Schema:  # noqa: N802 (ComfyUI's name)
        return cls.define_schema()


class NodeOutput:
    def __init__(self, *args, ui=None, **_):
        self.args, self.ui = args, ui

    @property
    def result(self):
        return self.args or None

    def __getitem__(self, index):
        return self.args[index]


class PreviewImage:
    def __init__(self, image, cls=None, **_):
        assert image.ndim == 4 and image.shape[-1] == 3, image.shape
        self.values = [{"filename": f"preview_{i}.png", "subfolder": "", "type": "temp"} for i in range(len(image))]

    def as_dict(self):
        return {"images": self.values, "animated": (False,)}


class PreviewText:
    def __init__(self, value, **_):
        self.value = value

    def as_dict(self):
        return {"text": (self.value,)}


class ProgressBar:
    updates: list[tuple[int, int]] = []

    def __init__(self, total, node_id=None):
        self.total = total

    def update_absolute(self, value, total=None, preview=None):
        ProgressBar.updates.append((value, total or self.total))


class Interrupt:
    pending = False


def throw_exception_if_processing_interrupted():
    if Interrupt.pending:
        Interrupt.pending = False
        raise InterruptProcessingException()


def make_folder_paths(models_dir: Path) -> types.ModuleType:
    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(models_dir)
    fp.supported_pt_extensions = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
    fp.folder_names_and_paths = {
        "checkpoints": ([str(models_dir / "checkpoints")], fp.supported_pt_extensions),
        "diffusers": ([str(models_dir / "diffusers")], {"folder"}),
        "upscale_models": ([str(models_dir / "upscale_models")], fp.supported_pt_extensions),
    }

    def get_folder_paths(key):
        return list(fp.folder_names_and_paths[key][0])

    def get_filename_list(key):
        paths, exts = fp.folder_names_and_paths[key]
        return sorted(str(p.relative_to(root)).replace(os.sep, "/") for root in map(Path, paths) if root.is_dir()
                      for p in root.rglob("*") if p.is_file() and p.suffix.lower() in exts)

    def get_full_path(key, name):
        for root in get_folder_paths(key):
            if (Path(root) / name).is_file():
                return str(Path(root) / name)
        return None

    fp.get_folder_paths, fp.get_filename_list, fp.get_full_path = get_folder_paths, get_filename_list, get_full_path
    return fp


def stub_modules(models_dir: Path) -> dict[str, types.ModuleType]:
    """Every fake module by its sys.modules name."""
    io = types.SimpleNamespace(Schema=Schema, ComfyNode=ComfyNode, NodeOutput=NodeOutput, Custom=_comfy_type,
                               **{n: _comfy_type(t) for n, t in [("Image", "IMAGE"), ("Int", "INT"),
                                  ("Float", "FLOAT"), ("String", "STRING"), ("Boolean", "BOOLEAN"),
                                  ("Combo", "COMBO"), ("Mask", "MASK"), ("UpscaleModel", "UPSCALE_MODEL")]})
    latest = types.ModuleType("comfy_api.latest")
    latest.io, latest.ui = io, types.SimpleNamespace(PreviewImage=PreviewImage, PreviewText=PreviewText)
    latest.ComfyExtension = type("ComfyExtension", (), {})
    comfy_api = types.ModuleType("comfy_api")
    comfy_api.latest = latest
    comfy = types.ModuleType("comfy")
    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = ProgressBar
    mm = types.ModuleType("comfy.model_management")
    mm.get_torch_device = lambda: torch.device("cpu")
    mm.intermediate_device = lambda: torch.device("cpu")
    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    mm.InterruptProcessingException = InterruptProcessingException
    mm.OOM_EXCEPTION = torch.OutOfMemoryError
    comfy.utils, comfy.model_management = utils, mm
    return {"comfy_api": comfy_api, "comfy_api.latest": latest, "comfy": comfy, "comfy.utils": utils,
            "comfy.model_management": mm, "folder_paths": make_folder_paths(models_dir)}


def use_models_dir(models_dir: Path) -> types.ModuleType:
    """Point the installed fake folder_paths at a fresh models folder; clear recorded progress and interrupts."""
    fp = sys.modules["folder_paths"]
    fp.models_dir = str(models_dir)
    fp.folder_names_and_paths.pop("uir_lora", None)
    for key in ("checkpoints", "diffusers", "upscale_models"):
        fp.folder_names_and_paths[key] = ([str(models_dir / key)], fp.folder_names_and_paths[key][1])
    ProgressBar.updates.clear()
    Interrupt.pending = False
    return fp


@contextmanager
def stubbed_pack(models_dir: Path) -> Iterator[types.ModuleType]:
    """Install the fakes, import the pack as a package against them, and remove both afterwards."""
    stubs = stub_modules(models_dir)
    saved = {name: sys.modules.get(name) for name in stubs}
    sys.modules.update(stubs)
    try:
        spec = importlib.util.spec_from_file_location(PACK_NAME, PACK_DIR / "__init__.py",
                                                      submodule_search_locations=[str(PACK_DIR)])
        pack = importlib.util.module_from_spec(spec)
        sys.modules[PACK_NAME] = pack
        spec.loader.exec_module(pack)
        yield pack
    finally:
        for name in [n for n in sys.modules if n == PACK_NAME or n.startswith(PACK_NAME + ".")]:
            del sys.modules[name]
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


# Core nodes the shipped workflows use (ComfyUI 0.3.64 nodes.py); Note is UI-only (dropped from API prompts).
CORE_SCHEMAS = {
    "SaveImage": Schema("SaveImage", "Save Image", inputs=[Input("images", "IMAGE"),
                                                           Input("filename_prefix", "STRING", default="ComfyUI")],
                        is_output_node=True),
    "PreviewImage": Schema("PreviewImage", "Preview Image", inputs=[Input("images", "IMAGE")], is_output_node=True),
}
UI_ONLY = {"Note": ["text"], "MarkdownNote": ["text"]}


def topological(prompt: dict) -> list[str]:
    """API-prompt node ids so that every node comes after the nodes it links from."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(nid: str) -> None:
        if nid in order:
            return
        if nid in visiting:
            raise ValueError(f"cycle through node {nid}")
        visiting.add(nid)
        for value in prompt[nid]["inputs"].values():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                visit(value[0])
        visiting.discard(nid)
        order.append(nid)

    for nid in prompt:
        visit(nid)
    return order


def run_prompt(node_classes: dict[str, type], prompt: dict) -> tuple[dict[str, tuple], dict[str, dict]]:
    """Execute an API prompt like ComfyUI's executor does, minus caching: returns (outputs, ui) by node id.

    Core output nodes record the images they were given under ui[node]["images"].
    """
    outputs: dict[str, tuple] = {}
    uis: dict[str, dict] = {}
    for nid in topological(prompt):
        node = prompt[nid]
        kwargs = {name: outputs[value[0]][value[1]] if isinstance(value, list) else value
                  for name, value in node["inputs"].items()}
        if node["class_type"] in CORE_SCHEMAS:
            outputs[nid], uis[nid] = (), {"images": kwargs["images"]}
            continue
        result = node_classes[node["class_type"]].execute(**kwargs)
        outputs[nid] = tuple(result.args)
        ui = result.ui.as_dict() if hasattr(result.ui, "as_dict") else result.ui
        if ui is not None:
            uis[nid] = ui
    return outputs, uis
