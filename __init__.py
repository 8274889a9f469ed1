"""UIR-LoRA universal image restoration: a ComfyUI node pack (nodes/) over a ComfyUI-free engine (uir_lora/).

Importable without ComfyUI (pytest collects this file as a top-level module): the nodes are only
imported when comfy_api is available and this file is loaded as a package, as ComfyUI does.
"""

import logging
import sys

WEB_DIRECTORY = "./web"
REQUIRES_COMFYUI = "0.3.60"
"""The oldest ComfyUI with the V3 node API the nodes use (pyproject's [tool.comfy] requires-comfyui)."""


def too_old_message() -> str:
    try:
        from comfyui_version import __version__ as running  # ComfyUI's own version file, in its root
    except ImportError:
        running = "an older version"
    return (f"UIR-LoRA needs ComfyUI {REQUIRES_COMFYUI} or newer (its nodes use comfy_api.latest), this is "
            f"{running}: update ComfyUI; no UIR nodes are registered")


try:
    import comfy_api.latest  # noqa: F401
except ImportError:
    if "comfy" in sys.modules:  # inside a ComfyUI that predates the V3 node API (not a plain import by pytest)
        logging.getLogger(__name__).error(too_old_message())
else:
    if __package__:
        from .nodes import comfy_entrypoint

        __all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
