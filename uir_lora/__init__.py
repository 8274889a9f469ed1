"""UIR-LoRA engine: universal image restoration with a frozen backbone and a routed LoRA bank.

No ComfyUI import anywhere in this package: the nodes in ../nodes are thin adapters over
``uir_lora.pipeline``, and the ``uir-lora`` command line calls the same functions.
"""

__version__ = "0.1.0"
