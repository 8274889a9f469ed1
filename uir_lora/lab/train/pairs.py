"""A user's own kind of damage: (damaged, clean) photo pairs from two folders, or clean photos plus a
damage function the user names on the command line.

Pairs are matched by file name without the suffix. Every problem found (a photo without its partner,
a file that is no image, two photos of a pair of different sizes, a pair that is shifted against
itself or shows two different pictures) is listed in one error, so the folders are fixed in one go.
Training takes random crops of a pair at the same place in both photos, rotated and flipped together.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d
from torch.utils.data import Dataset

from ...errors import InputError
from ...images import IMAGE_SUFFIXES, load_image

ALIGN_SIDE = 512
"""Side of the centre crop the shift check compares (a shift shows anywhere in the photo)."""
MAX_SHIFT = 6
"""The shift check looks this many pixels each way."""
MISALIGNED_SHARE = 0.3
"""A pair is misaligned when a shift wins back this share of the correlation missing at zero shift. Measured on
3 photos x 12 built-in kinds at full severity: at most 0.23 except the strongest motion blur (0.43, its kernel
is one-sided); 3 px shifts of scratched photos: 0.36-0.98."""
MIN_CORRELATION = 0.2
"""Below this correlation of the two photos at about 32 px they do not show the same picture: two different
photos scored -0.06..-0.01, the same one under the 12 built-in kinds at full severity 0.30-1.0 (haze and rain on
a bare wall lowest)."""
RANGE_TOLERANCE = 1e-4
"""How far outside 0..1 a damage function's output may stray (float rounding), before it is refused."""

DamageFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass
class PhotoPair:
    """One training or validation pair: the shared name and both photos as [1,3,H,W] in 0..1."""

    name: str
    damaged: torch.Tensor
    clean: torch.Tensor


def _files_by_stem(folder: Path, problems: list[str]) -> dict[str, Path]:
    """Image files of ``folder`` by stem; other files and stems used twice become problems."""
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; give a folder of photos")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            problems.append(f"{path}: not an image ({path.suffix or 'no suffix'}); keep only "
                            f"{', '.join(IMAGE_SUFFIXES)} files in the folder")
        elif path.stem in found:
            problems.append(f"{path} and {found[path.stem].name}: two photos named {path.stem!r}; keep one")
        else:
            found[path.stem] = path
    return found


def _load(path: Path, problems: list[str]) -> torch.Tensor | None:
    try:
        return load_image(path)
    except InputError as exc:
        problems.append(f"{exc}; replace or remove it")
        return None


def _grey(image: torch.Tensor) -> torch.Tensor:
    return (image * image.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(dim=1)[0]


def pair_shift(damaged: torch.Tensor, clean: torch.Tensor) -> tuple[int, int, float]:
    """(dy, dx, share): the whole-pixel shift of ``damaged`` against ``clean`` within MAX_SHIFT px that
    correlates best (grey centre crops, blurred so noise and thin marks weigh little), and the share of the
    correlation missing at zero shift that this shift wins back (0: no better than zero shift; 1: a perfect
    match once shifted). A few lines of torch; no kept library measures it on the damage-free band."""
    height, width = damaged.shape[-2:]
    side_y, side_x = min(height, ALIGN_SIDE), min(width, ALIGN_SIDE)
    if min(side_y, side_x) < 2 * MAX_SHIFT + 16:
        return 0, 0, 0.0  # too small to tell
    top, left = (height - side_y) // 2, (width - side_x) // 2
    a, b = (gaussian_blur2d(_grey(x[..., top:top + side_y, left:left + side_x])[None, None], (7, 7), (1.0, 1.0))[0, 0]
            for x in (damaged, clean))
    core = a[MAX_SHIFT:side_y - MAX_SHIFT, MAX_SHIFT:side_x - MAX_SHIFT]
    core = core - core.mean()
    best, at_zero = (-2.0, 0, 0), 0.0
    for dy in range(-MAX_SHIFT, MAX_SHIFT + 1):
        for dx in range(-MAX_SHIFT, MAX_SHIFT + 1):
            window = b[MAX_SHIFT - dy:side_y - MAX_SHIFT - dy, MAX_SHIFT - dx:side_x - MAX_SHIFT - dx]
            window = window - window.mean()
            correlation = float((core * window).sum() / (core.norm() * window.norm()).clamp_min(1e-12))
            at_zero = correlation if dy == dx == 0 else at_zero
            best = max(best, (correlation, dy, dx))
    return best[1], best[2], (best[0] - at_zero) / max(1e-9, 1.0 - at_zero)


def pair_correlation(damaged: torch.Tensor, clean: torch.Tensor) -> float:
    """Pearson correlation of the two grey photos at about 32 px: high for the same picture under any damage
    that keeps its layout (noise, scratches, blur, a colour cast), low for two different pictures."""
    factor = max(1, min(damaged.shape[-2:]) // 32)
    a, b = (F.avg_pool2d(_grey(x)[None, None], factor).flatten() for x in (damaged, clean))
    a, b = a - a.mean(), b - b.mean()
    denominator = float(a.norm() * b.norm())
    return 1.0 if denominator < 1e-9 else float(a @ b) / denominator  # flat photos: nothing to compare


def check_pair(name: str, damaged: torch.Tensor, clean: torch.Tensor, alignment: bool = True) -> str | None:
    """None when the pair is usable, else what is wrong with it and how to fix it."""
    if damaged.shape != clean.shape:
        return (f"{name}: the damaged photo is {damaged.shape[-1]}x{damaged.shape[-2]} px, the clean one "
                f"{clean.shape[-1]}x{clean.shape[-2]} px; a pair must be the same picture at the same size "
                f"(crop or resize both the same way)")
    correlation = pair_correlation(damaged, clean)
    if correlation < MIN_CORRELATION:
        return (f"{name}: the two photos do not show the same picture (correlation {correlation:.2f} < "
                f"{MIN_CORRELATION}); check that the files of this name belong together")
    dy, dx, share = pair_shift(damaged, clean) if alignment else (0, 0, 0.0)
    if (dy or dx) and share >= MISALIGNED_SHARE:
        return (f"{name}: misaligned: the damaged photo matches the clean one best when shifted by {dy} px down "
                f"and {dx} px right; register the pair (same crop, same position) before training, or pass "
                f"--no-alignment-check if the damage itself moves the picture (strong motion blur)")
    return None


def _raise_problems(problems: Sequence[str], what: str) -> None:
    if problems:
        listing = "\n  - ".join(problems)
        raise InputError(f"{len(problems)} problem(s) with {what}:\n  - {listing}")


def find_pairs(damaged_dir: Path, clean_dir: Path, alignment: bool = True) -> list[PhotoPair]:
    """Every (damaged, clean) pair of the two folders, matched by name; InputError listing each problem."""
    problems: list[str] = []
    damaged_files = _files_by_stem(Path(damaged_dir), problems)
    clean_files = _files_by_stem(Path(clean_dir), problems)
    for stem in sorted(damaged_files.keys() - clean_files.keys()):
        problems.append(f"{damaged_files[stem]}: missing partner: no {stem}.* in {clean_dir}")
    for stem in sorted(clean_files.keys() - damaged_files.keys()):
        problems.append(f"{clean_files[stem]}: missing partner: no {stem}.* in {damaged_dir}")
    pairs = []
    for stem in sorted(damaged_files.keys() & clean_files.keys()):
        damaged, clean = _load(damaged_files[stem], problems), _load(clean_files[stem], problems)
        if damaged is None or clean is None:
            continue
        problem = check_pair(stem, damaged, clean, alignment)
        if problem:
            problems.append(problem)
        else:
            pairs.append(PhotoPair(stem, damaged, clean))
    _raise_problems(problems, f"the pairs in {damaged_dir} (damaged) and {clean_dir} (clean)")
    if not pairs:
        raise InputError(f"no pairs in {damaged_dir} and {clean_dir}: put each damaged photo in the first folder and "
                         f"its clean version, under the same name, in the second")
    return pairs


def load_photos(folder: Path) -> list[tuple[str, torch.Tensor]]:
    """(stem, [1,3,H,W]) of every photo in ``folder``; InputError listing each file that is no image."""
    problems: list[str] = []
    files = _files_by_stem(Path(folder), problems)
    photos = [(stem, image) for stem, path in files.items() if (image := _load(path, problems)) is not None]
    _raise_problems(problems, f"the photos in {folder}")
    if not photos:
        raise InputError(f"{folder}: no photos ({', '.join(IMAGE_SUFFIXES)}); add the clean photos to damage")
    return photos


def held_out(names: Sequence[str], fraction: float) -> set[str]:
    """The validation names: the first ``round(len * fraction)`` (at least one when 0 < fraction) in the order of
    their sha256, so the split depends only on each name, not on how the files happen to be numbered."""
    if fraction <= 0:
        return set()
    count = min(len(names) - 1, max(1, round(len(names) * fraction)))
    return set(sorted(names, key=lambda n: hashlib.sha256(n.encode()).hexdigest())[:count])


def load_damage_function(spec: str) -> DamageFn:
    """``module:function`` (importable) or ``path/to/file.py:function``, named by the user on the command line."""
    target, sep, attribute = spec.rpartition(":")
    if not sep or not target or not attribute.isidentifier():
        raise InputError(f"--degrade {spec!r}: expected module:function or path/to/file.py:function, "
                         f"e.g. my_damage:scratches")
    try:
        if target.endswith(".py") or "/" in target or "\\" in target:
            path = Path(target)
            if not path.is_file():
                raise InputError(f"--degrade {spec!r}: no file {path}")
            module_name = f"uir_lora_user_damage_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]}"
            module_spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_name] = module  # dataclasses and pickling look the module up by name
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except InputError:
        raise
    except Exception as exc:  # the user's code: any error while importing it is reported, not a traceback
        raise InputError(f"--degrade {spec!r}: importing {target} failed: {type(exc).__name__}: {exc}") from exc
    function = getattr(module, attribute, None)
    if not callable(function):
        raise InputError(f"--degrade {spec!r}: {target} has no function {attribute!r}")
    return function


def apply_damage(function: DamageFn, spec: str, image: torch.Tensor, generator: torch.Generator,
                 where: str) -> torch.Tensor:
    """``function(image [1,3,H,W], generator)`` with its output checked: a float tensor of the input's shape,
    finite, in 0..1. Each problem is an InputError naming the function, the photo and the fix."""
    try:
        out = function(image.clone(), generator)
    except Exception as exc:  # the user's code
        raise InputError(f"--degrade {spec}: raised {type(exc).__name__}: {exc} (on {where})") from exc
    said = f"--degrade {spec} on {where}"
    if not isinstance(out, torch.Tensor):
        raise InputError(f"{said}: returned {type(out).__name__}; it must return the damaged image as a torch.Tensor")
    if tuple(out.shape) != tuple(image.shape):
        raise InputError(f"{said}: returned shape {tuple(out.shape)} for an input of shape {tuple(image.shape)}; "
                         f"return the image at the same shape")
    if not out.is_floating_point():
        raise InputError(f"{said}: returned dtype {out.dtype}; return floats in 0..1 (e.g. out.float() / 255)")
    if not torch.isfinite(out).all():
        raise InputError(f"{said}: returned NaN or Inf values; return finite values in 0..1")
    low, high = float(out.min()), float(out.max())
    if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        raise InputError(f"{said}: returned values in [{low:.4g}, {high:.4g}], outside 0..1; clamp them "
                         f"(out.clamp(0, 1))")
    return out.detach().float().cpu().clamp(0, 1)


def damaged_pairs(photos: Sequence[tuple[str, torch.Tensor]], function: DamageFn, spec: str, draws: int,
                  seed: int) -> list[PhotoPair]:
    """``draws`` damaged versions of every clean photo, each from its own seeded generator."""
    pairs = []
    for index, (stem, clean) in enumerate(photos):
        for draw in range(draws):
            generator = torch.Generator().manual_seed(seed * 1_000_003 + index * 1009 + draw)
            damaged = apply_damage(function, spec, clean, generator, f"{stem} (draw {draw})")
            pairs.append(PhotoPair(f"{stem}#{draw}", damaged, clean))
    return pairs


def carried_damage(pairs: Sequence[PhotoPair], photos: Sequence[torch.Tensor], per_photo: int = 2,
                   seed: int = 0) -> list[torch.Tensor]:
    """The pairs' damage carried onto other pictures: each photo plus the difference (damaged - clean) of a
    random training pair, flipped at random and tiled to the photo's size, ``per_photo`` times.

    The router's embedding of a new kind, placed on the user's few damaged photos alone, learns their scenes
    along with their damage and takes photos of other kinds from other scenes; the same damage on many scenes
    keeps it to the damage. A difference carries damage that adds marks (scratches, dust, grain, noise,
    moiré, a pattern); for damage that moves or blurs the picture it is only a rough stand-in.
    """
    if not pairs or per_photo < 1:
        return []
    residuals = [pair.damaged - pair.clean for pair in pairs]
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for photo in photos:
        height, width = photo.shape[-2:]
        for _ in range(per_photo):
            residual = residuals[int(torch.randint(0, len(residuals), (), generator=generator))]
            for dim in (-1, -2):
                if torch.rand((), generator=generator) < 0.5:
                    residual = residual.flip(dim)
            tiles = (1, 1, -(-height // residual.shape[-2]), -(-width // residual.shape[-1]))
            examples.append((photo + residual.repeat(*tiles)[..., :height, :width]).clamp(0, 1))
    return examples


class PairCropDataset(Dataset):
    """Item i: a random crop of a random pair (the same window of both photos), rotated by a random multiple of
    90 degrees and flipped at random, both photos alike; seeded by (seed, i)."""

    def __init__(self, pairs: Sequence[PhotoPair], crop: int, length: int, seed: int) -> None:
        if not pairs:
            raise InputError("no training pairs; give at least one pair besides the held-out ones")
        smallest = min(pairs, key=lambda p: min(p.clean.shape[-2:]))
        if min(smallest.clean.shape[-2:]) < crop:
            raise InputError(f"{smallest.name} is {smallest.clean.shape[-1]}x{smallest.clean.shape[-2]} px, smaller "
                             f"than the training crop {crop}; use --crop <= {min(smallest.clean.shape[-2:])}")
        self.pairs, self.crop, self.length, self.seed = list(pairs), crop, length, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        pair = self.pairs[int(torch.randint(0, len(self.pairs), (1,), generator=generator))]
        height, width = pair.clean.shape[-2:]
        top = int(torch.randint(0, height - self.crop + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - self.crop + 1, (1,), generator=generator))
        both = torch.cat([pair.damaged, pair.clean])[..., top:top + self.crop, left:left + self.crop]
        both = torch.rot90(both, int(torch.randint(0, 4, (1,), generator=generator)), (2, 3))
        if torch.rand((1,), generator=generator) < 0.5:
            both = both.flip(-1)
        return both[0].contiguous(), both[1].contiguous()


def file_digest(spec: str) -> str | None:
    """sha256 of a ``path.py:function`` spec's file (recorded in provenance), None for a module spec."""
    target = spec.rpartition(":")[0]
    path = Path(target)
    return hashlib.sha256(path.read_bytes()).hexdigest() if target.endswith(".py") and path.is_file() else None

