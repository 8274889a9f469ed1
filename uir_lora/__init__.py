"""UIR-LoRA engine: universal image restoration with a frozen backbone and a routed LoRA bank.

No ComfyUI import anywhere in this package: the nodes in ../nodes are thin adapters over
``uir_lora.pipeline``, and the ``uir-lora`` command line calls the same functions.
"""

__version__ = "0.1.0"

from .errors import BackboneError, BankError, InputError, RestoreInterrupted, UIRError, UnsafePathError  # noqa: E402

__all__ = ["BackboneError", "BankError", "InputError", "RestoreInterrupted", "UIRError", "UnsafePathError"]
