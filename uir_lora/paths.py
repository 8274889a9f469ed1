"""Resolve user-supplied names (from workflows or the CLI) inside allowed folders only."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .errors import UnsafePathError

MAX_NAME_BYTES = 255
"""The longest file or folder name common file systems allow."""
PACK_ROOT = Path(__file__).resolve().parent.parent
"""The pack's folder (ComfyUI custom_nodes/<pack> or a source checkout)."""


def give_default_mode(path: str | os.PathLike) -> None:
    """Give a temporary file the permissions a plainly created file gets (0666 minus the umask) before it
    replaces its target: NamedTemporaryFile makes files private (0600), and restored images and bank files
    are read by other programs and users (ComfyUI's server, a file browser, a shared bank folder)."""
    os.chmod(path, 0o666 & ~current_umask())


def current_umask() -> int:
    """The process's umask, read without changing it where the system shows it (Linux): setting it to read
    it, as os.umask does, would let another thread of ComfyUI's server create a file with no umask."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o077)  # elsewhere: set a strict one for the instant it takes to read the old one
    os.umask(umask)
    return umask


def bundled_bank_root() -> Path:
    """Where the shipped ``lora_bank/`` lives: next to the engine, or installed as package data."""
    beside = PACK_ROOT / "lora_bank"
    if beside.is_dir():
        return beside
    from importlib.resources import files  # wheel install: mapped to uir_lora/bundled_bank

    return Path(str(files("uir_lora") / "bundled_bank"))


def safe_resolve(name: str, roots: Iterable[os.PathLike | str], *, what: str = "file") -> Path:
    """Resolve ``name`` relative to one of ``roots``; refuse absolute paths, ``..`` and symlink escapes.

    The first root in which the name exists wins. Raises UnsafePathError for names that could
    leave the roots and FileNotFoundError (listing the searched folders) when nothing matches.
    """
    roots = [Path(r) for r in roots]
    if not isinstance(name, str) or not name.strip():
        raise UnsafePathError(f"{what} name must be a non-empty string, got {name!r}")
    if "\x00" in name or os.path.isabs(name) or name.startswith(("/", "\\")) or ":" in "".join(Path(name).parts[:1]):
        raise UnsafePathError(f"{what} {name!r} must be a name relative to a model folder, not an absolute path")
    parts = Path(name.replace("\\", "/")).parts
    if any(p == ".." for p in parts):
        raise UnsafePathError(f"{what} {name!r} must not contain '..'")
    if not parts or parts == (".",):
        raise UnsafePathError(f"{what} {name!r} names the model folder itself; give the name of a folder inside it")
    if any(len(p.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES for p in parts):
        raise UnsafePathError(f"{what} name {name[:60]!r}... is longer than {MAX_NAME_BYTES} bytes, which no file "
                              f"system allows; use the folder's real name")
    for root in roots:
        candidate = root / Path(*parts)
        if not candidate.exists():
            continue
        real_root, real = root.resolve(), candidate.resolve()
        if real != real_root and real_root not in real.parents:
            raise UnsafePathError(f"{what} {name!r} resolves to {real}, outside {real_root} (a symlink escape)")
        return real
    searched = ", ".join(str(r) for r in roots) or "(no folders)"
    raise FileNotFoundError(f"{what} {name!r} not found; put it in one of: {searched}")
