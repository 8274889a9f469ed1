"""Shared fixtures. Tests run offline (pytest-socket) on the CPU with one thread.

The ComfyUI fakes live in comfy_stubs.py, a support module (tools/make_workflows.py uses it too);
test modules reach them only through the fixtures here, never by importing it or each other.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import shutil
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import comfy_stubs
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def embedded_backbone():
    """The real embedded FFDNet backbone from lora_bank/backbones: small, so one load serves the whole run."""
    from uir_lora.pipeline import default_backbone

    return default_backbone()


@pytest.fixture()
def own_backbone(embedded_backbone):
    """A private copy: a test that attaches and changes adapters must not leak them into other tests."""
    return copy.deepcopy(embedded_backbone)


@pytest.fixture(scope="session")
def encoder_dim() -> int:
    from uir_lora.router.encoder import DegradationEncoder

    return DegradationEncoder().dim


@pytest.fixture()
def random_bank(tmp_path, embedded_backbone, encoder_dim):
    """A bank of three random LoRAs (noise, haze, jpeg) on the embedded backbone, routable."""
    from uir_lora.bank.store import open_bank
    from uir_lora.lab.testing.banks import make_random_bank

    return open_bank(make_random_bank(tmp_path, embedded_backbone, dim=encoder_dim,
                                      conditioning={"sigma": 25 / 255}))


@pytest.fixture()
def photo() -> torch.Tensor:
    """A natural photo (scikit-image's astronaut, public domain) cropped to 96x128, [1,3,H,W]."""
    try:
        from skimage import data
    except ImportError:
        pytest.skip("scikit-image not installed")
    image = torch.from_numpy(data.astronaut()[100:196, 150:278].copy()).permute(2, 0, 1)[None].float() / 255
    return image


@pytest.fixture()
def photo_256() -> torch.Tensor:
    """The astronaut's centre, 256x256, [1,3,H,W]."""
    skimage_data = pytest.importorskip("skimage.data")
    return torch.from_numpy(skimage_data.astronaut()[128:384, 128:384].copy()).permute(2, 0, 1)[None].float() / 255


@pytest.fixture()
def bank_with(tmp_path) -> Callable[..., Path]:
    """A factory: ``bank_with(name, **router_fields)`` copies the shipped bank to ``tmp_path / name`` with those
    ``router`` fields of its manifest set (None: removed) and returns the folder."""
    from uir_lora.pipeline import DEFAULT_BANK, load_bank

    def make(name: str, **router_fields) -> Path:
        folder = tmp_path / name
        shutil.copytree(load_bank(DEFAULT_BANK).root, folder)
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["router"].update(router_fields)
        for field_name, value in router_fields.items():
            if value is None:
                del manifest["router"][field_name]
        (folder / "manifest.json").write_text(json.dumps(manifest))
        return folder
    return make


def _tree_digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def tree_digest() -> Callable[[Path], dict[str, str]]:
    """{relative path: sha256} of every file under a folder: equal before and after means nothing was
    written, edited or left behind there."""
    return _tree_digest


def _tool_module(name: str) -> types.ModuleType:
    path = Path(__file__).resolve().parents[1] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tool() -> Callable[[str], types.ModuleType]:
    """A script of tools/ by name, imported as a module (tools/ is not a package)."""
    return _tool_module


# -- the pack against fakes of ComfyUI ----------------------------------------------------------
@pytest.fixture(scope="session")
def comfy_fakes() -> types.ModuleType:
    """The fake ComfyUI modules and their recorders: ProgressBar.updates, Interrupt.pending and
    InterruptProcessingException, CORE_SCHEMAS and UI_ONLY, run_prompt, use_models_dir."""
    return comfy_stubs


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> Iterator[types.ModuleType]:
    """The pack imported as a package against the fakes, once per module; both are removed afterwards, so
    no other module sees fake ComfyUI modules in sys.modules."""
    with comfy_stubs.stubbed_pack(tmp_path_factory.mktemp("models")) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def nodes(pack) -> dict[str, type]:
    """The pack's node classes by node id."""
    return {cls.GET_SCHEMA().node_id: cls for cls in pack.nodes.NODES}


@pytest.fixture()
def models(pack, tmp_path) -> Path:
    """A fresh models/ folder for the fake folder_paths; returns it. Resets recorded progress and interrupts."""
    comfy_stubs.use_models_dir(tmp_path)
    return tmp_path
