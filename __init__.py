"""UIR-LoRA universal image restoration: a ComfyUI node pack (nodes/) over a ComfyUI-free engine (uir_lora/).

Importable without ComfyUI (pytest collects this file as a top-level module): the nodes are only
imported when comfy_api is available and this file is loaded as a package, as ComfyUI does.
"""

WEB_DIRECTORY = "./web"

try:
    import comfy_api.latest  # noqa: F401
except ImportError:
    pass
else:
    if __package__:
        from .nodes import comfy_entrypoint

        __all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
