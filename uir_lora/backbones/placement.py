"""Where a backbone runs: device and dtype names as a user types them, checked against this machine."""

from __future__ import annotations

import torch

from ..errors import InputError

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DEVICE_FORMS = "cpu, cuda, cuda:N, mps or auto"


def _cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _mps_available() -> bool:
    return hasattr(torch.backends, "mps") and torch.backends.mps.is_available()


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the first CUDA GPU, else Apple's MPS, else the CPU; others must exist on this machine."""
    text = name.strip().lower()
    if text == "auto":
        if _cuda_count():
            return torch.device("cuda", 0)
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise InputError(f"device {name!r} is not one of {DEVICE_FORMS}") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        count = _cuda_count()
        if count == 0:
            raise InputError(f"device {name!r}: this machine has no CUDA GPU that torch can use "
                             f"(torch {torch.__version__}); use --device cpu or auto")
        index = 0 if device.index is None else device.index
        if index >= count:
            raise InputError(f"device {name!r}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
        return torch.device("cuda", index)
    if device.type == "mps":
        if not _mps_available():
            raise InputError(f"device {name!r}: Apple's MPS is not available here; use --device cpu or auto")
        return device
    raise InputError(f"device {name!r} is not one of {DEVICE_FORMS}")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``float32``, ``float16`` or ``bfloat16``; float16 is refused on the CPU, where many ops lack it."""
    if name not in DTYPES:
        raise InputError(f"dtype {name!r} is not one of {', '.join(DTYPES)}")
    dtype = DTYPES[name]
    if dtype == torch.float16 and device.type == "cpu":
        raise InputError("float16 is a GPU format: on the CPU it is slow or unsupported; "
                         "use --dtype float32 (or bfloat16), or a GPU with --device cuda")
    return dtype
