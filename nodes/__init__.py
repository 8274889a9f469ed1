"""ComfyUI V3 nodes of the UIR-LoRA pack: thin adapters over the engine in ../uir_lora."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .common import register_model_folder
from .loaders import UIR_BackboneLoader, UIR_LoraBankLoader
from .restore import UIR_Restore
from .routing import UIR_DegradationEstimator, UIR_LoraComposer
from .utilities import UIR_Compare, UIR_ExampleImage, UIR_SyntheticDegrade

NODES: list[type[io.ComfyNode]] = [
    UIR_BackboneLoader, UIR_LoraBankLoader, UIR_DegradationEstimator, UIR_LoraComposer, UIR_Restore,
    UIR_SyntheticDegrade, UIR_Compare, UIR_ExampleImage,
]


class UIRExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> UIRExtension:
    register_model_folder()  # here, not at import: folder_paths has read extra_model_paths.yaml by now
    return UIRExtension()
