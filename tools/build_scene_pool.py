"""Rebuild the scene pool: camera photographs from five Debian wallpaper packages, for training and checks.

    python tools/build_scene_pool.py                  # fetch, extract, keep the listed photos in data/scenes/
    python tools/build_scene_pool.py --refresh-list   # re-select from scratch and rewrite benchmarks/scenes.json
    python tools/build_scene_pool.py --contact-sheet /tmp/sheet.jpg   # thumbnails of every candidate, to judge by eye

The packages are fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x``; nothing is installed.
The images are CC-BY / CC-BY-SA / GPL works: they stay in the git-ignored data/scenes/ and are never
shipped. benchmarks/scenes.json records each kept file's package, path, sha256, size, licence and split
(TRAIN or CHECK; CHECK scenes are never used for training or tuning). A normal run checks every file
against the recorded sha256, so a changed Debian package is reported instead of silently used.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uir_lora.lab.scenes import DEFAULT_LIST, DEFAULT_POOL, SPLITS, read_scene_list  # noqa: E402

PACKAGES = ("ukui-wallpapers", "lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04",
            "plasma-workspace-wallpapers", "gnome-backgrounds")
RASTER_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
PLASMA_SIZE = re.compile(r"^(\d+)x(\d+)$")
CHECK_EVERY = 3
"""Every third scene of a package (in sha256 order) is a CHECK scene: about a third, stratified by package."""

ILLUSTRATION = "illustration or render, not a camera photograph"
NOT_PHOTOGRAPHS: dict[str, str] = {
    # Pass the photo-like test (many colours, textured) but are not camera photographs: judged by eye on
    # the contact sheet (--contact-sheet). Key: "<package>/<file name or plasma wallpaper name>".
    "ukui-wallpapers/string.jpg": ILLUSTRATION,
    "lomiri-wallpapers-20.04/Infinite-Sea_by_Aury88.jpg": "digital composite (night sky pasted over a gradient sea)",
    "plasma-workspace-wallpapers/Autumn": "digital painting",
    "plasma-workspace-wallpapers/Kay": ILLUSTRATION,
    "plasma-workspace-wallpapers/Patak": ILLUSTRATION,
    "plasma-workspace-wallpapers/SafeLanding": ILLUSTRATION,
    "plasma-workspace-wallpapers/Shell": ILLUSTRATION,
    "gnome-backgrounds/licorice-d.webp": ILLUSTRATION,
    "gnome-backgrounds/licorice-l.webp": ILLUSTRATION,
    "gnome-backgrounds/truchet-l.webp": ILLUSTRATION,
}
"""Candidates excluded by eye, with the reason."""

PHOTOGRAPHS_FAILING_TEST: dict[str, str] = {
    # Camera photographs dominated by smooth sky, fog or walls, which the photo-like test takes for flat art.
    "lomiri-wallpapers-16.04/Bridge_by_Sander_Klootwijk.jpg": "bridge cables over flat land, mostly sky",
    "lomiri-wallpapers-16.04/free_by_Peter_Nerlich.jpg": "ceiling lamps and a bird figure, grey wall",
    "lomiri-wallpapers-16.04/greentock_by_Peter_Nerlich.jpg": "wall clock on a grey wall",
    "plasma-workspace-wallpapers/ColdRipple": "jetty in fog",
    "plasma-workspace-wallpapers/DarkestHour": "lake and trees in blue fog",
    "plasma-workspace-wallpapers/Grey": "facade of a building, black and white",
    "plasma-workspace-wallpapers/summer_1am": "horizon at dusk",
}
"""Candidates kept by eye although they fail the photo-like test, with what they show."""


@dataclass
class Candidate:
    package: str
    path: str          # inside the package, e.g. usr/share/backgrounds/city.png
    name: str          # unique in the pool: "<package>/<file name>" or "<package>/<plasma wallpaper>"
    file: Path         # the extracted file


def run(command: list[str], cwd: Path) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()[-500:]}\n"
                         "The pool needs a Debian/Ubuntu machine with apt-get and dpkg-deb and access to a mirror.")


def fetch_packages(work: Path, update: bool) -> dict[str, Path]:
    """Download and unpack each package into work/<package>/ (apt-get download; never installed)."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise SystemExit("apt-get and dpkg-deb are needed to fetch the wallpaper packages (Debian or Ubuntu).")
    work.mkdir(parents=True, exist_ok=True)
    if update:
        run(["apt-get", "update"], work)
    roots = {}
    for package in PACKAGES:
        debs = sorted(work.glob(f"{package}_*.deb"))
        if not debs:
            run(["apt-get", "download", package], work)
            debs = sorted(work.glob(f"{package}_*.deb"))
        root = work / package
        if not root.is_dir():
            run(["dpkg-deb", "-x", str(debs[-1]), str(root)], work)
        roots[package] = root
    return roots


def candidates(package: str, root: Path) -> list[Candidate]:
    """Raster images of a package; for plasma, only the largest resolution of each wallpaper."""
    found = []
    if package == "plasma-workspace-wallpapers":
        for folder in sorted((root / "usr/share/wallpapers").glob("*/contents/images")):
            sized = [(int(m[1]) * int(m[2]), f) for f in folder.iterdir()
                     if f.suffix.lower() in RASTER_SUFFIXES and (m := PLASMA_SIZE.match(f.stem))]
            if sized:
                largest = max(sized)[1]
                wallpaper = folder.parts[-3]
                found.append(Candidate(package, str(largest.relative_to(root)), f"{package}/{wallpaper}", largest))
        return found
    for file in sorted(root.rglob("*")):
        if file.suffix.lower() in RASTER_SUFFIXES and "/doc/" not in str(file):
            found.append(Candidate(package, str(file.relative_to(root)), f"{package}/{file.name}", file))
    return found


def photo_like(image: Image.Image, min_colours: int = 150, max_flat: float = 0.60) -> bool:
    """The photo-like test of shared/reference/offline-assets.md 1.1: many colours, few flat pixels."""
    array = np.asarray(image.convert("RGB").resize((256, 256), Image.BILINEAR))
    colours = len(np.unique((array >> 4).reshape(-1, 3).astype(np.int32) @ np.array([256, 16, 1])))
    grey = array.astype(np.float32).mean(-1)
    gradient = np.abs(np.diff(grey, axis=0))[:, :-1] + np.abs(np.diff(grey, axis=1))[:-1, :]
    return bool(colours >= min_colours and (gradient < 2.0).mean() < max_flat)


def parse_licences(copyright_text: str) -> tuple[list[tuple[list[str], str]], str | None]:
    """DEP-5 ``Files:``/``License:`` paragraphs as (patterns, licence); else the free-form fallback text.

    Debian's machine-readable format is simple enough that a parser library would add a dependency for
    a dozen lines; free-form files (gnome-backgrounds) are matched by file name in ``licence_of``.
    """
    if not copyright_text.lstrip().startswith("Format:"):
        return [], copyright_text
    paragraphs = []
    for block in re.split(r"\n\s*\n", copyright_text):
        files = re.search(r"^Files:(.*(?:\n[ \t].*)*)", block, re.M)
        licence = re.search(r"^License:\s*(\S.*)$", block, re.M)
        if files and licence:
            patterns = [p for p in files.group(1).split() if p]
            paragraphs.append((patterns, licence.group(1).strip()))
    return paragraphs, None


def licence_of(candidate: Candidate, copyright_text: str) -> str:
    paragraphs, free_form = parse_licences(copyright_text)
    base = Path(candidate.path).name
    if free_form is None:
        chosen = None
        for patterns, licence in paragraphs:  # DEP-5: the last matching paragraph wins
            # installed paths differ from the source tree's, so match by file name; debian/ is packaging
            if any(p == "*" or not p.startswith("debian/") and fnmatch.fnmatch(base, Path(p).name) for p in patterns):
                chosen = licence
        return chosen or "UNKNOWN"
    position = free_form.find(base)
    match = re.search(r"Licensed under (.+?)(?: License)?\.?$", free_form[position:], re.M) if position >= 0 else None
    return match.group(1) if match else "UNKNOWN"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def select(roots: dict[str, Path]) -> list[dict]:
    """Every candidate that passes the photo-like test and the by-eye list, with its record."""
    records = []
    for package, root in roots.items():
        copyright_text = (root / f"usr/share/doc/{package}/copyright").read_text(encoding="utf-8", errors="replace")
        for candidate in candidates(package, root):
            with Image.open(candidate.file) as image:
                size = image.size
                passes = photo_like(image)
            if min(size) < 512 or candidate.name in NOT_PHOTOGRAPHS:
                continue
            if not passes and candidate.name not in PHOTOGRAPHS_FAILING_TEST:
                continue
            records.append({"name": candidate.name, "package": package, "path": candidate.path,
                            "sha256": sha256(candidate.file), "width": size[0], "height": size[1],
                            "bytes": candidate.file.stat().st_size, "licence": licence_of(candidate, copyright_text),
                            "photo_like_test": passes})
    return assign_splits(records)


def assign_splits(records: list[dict]) -> list[dict]:
    """Deterministic split, stratified by package: every CHECK_EVERY-th scene in sha256 order is CHECK."""
    out = []
    for package in PACKAGES:
        own = sorted((r for r in records if r["package"] == package), key=lambda r: r["sha256"])
        for index, record in enumerate(own):
            out.append({**record, "split": SPLITS[1] if index % CHECK_EVERY == CHECK_EVERY - 1 else SPLITS[0]})
    return out


def pool_file_name(record: dict) -> str:
    """The kept copy's name in data/scenes/: package folder, then a name unique within it."""
    return f"{record['name']}{Path(record['path']).suffix.lower()}"


def copy_pool(records: list[dict], roots: dict[str, Path], pool: Path) -> None:
    for record in records:
        source = roots[record["package"]] / record["path"]
        if not source.is_file():
            raise SystemExit(f"{record['package']} no longer holds {record['path']}; rebuild the list with "
                             "--refresh-list and review it")
        digest = sha256(source)
        if digest != record["sha256"]:
            raise SystemExit(f"{record['name']}: sha256 {digest[:12]} differs from the list's "
                             f"{record['sha256'][:12]} (a new package version); rebuild the list with --refresh-list")
        target = pool / pool_file_name(record)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def contact_sheet(roots: dict[str, Path], out: Path, thumb: int = 200, columns: int = 8) -> None:
    """All candidates as labelled thumbnails (grey label: fails the photo-like test) for the by-eye pass."""
    from PIL import ImageDraw

    items = [c for package, root in roots.items() for c in candidates(package, root)]
    rows = -(-len(items) // columns)
    sheet = Image.new("RGB", (columns * thumb, rows * (thumb + 14)), "white")
    draw = ImageDraw.Draw(sheet)
    for index, item in enumerate(items):
        with Image.open(item.file) as image:
            image = image.convert("RGB")
            passes = photo_like(image)
            image.thumbnail((thumb, thumb))
        x, y = (index % columns) * thumb, (index // columns) * (thumb + 14)
        sheet.paste(image, (x, y + 14))
        draw.text((x + 2, y + 1), f"{index} {item.name.split('/', 1)[1][:26]}", fill="black" if passes else "grey")
    sheet.save(out, quality=85)
    for index, item in enumerate(items):
        print(index, item.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "uir-scene-debs",
                        help="where the .deb files are downloaded and unpacked (reused when present)")
    parser.add_argument("--out", type=Path, default=DEFAULT_POOL, help="the pool folder (git-ignored)")
    parser.add_argument("--list", type=Path, default=DEFAULT_LIST, help="the committed scene list")
    parser.add_argument("--refresh-list", action="store_true",
                        help="select from scratch (photo-like test + by-eye list) and rewrite the list")
    parser.add_argument("--no-update", action="store_true", help="skip apt-get update")
    parser.add_argument("--contact-sheet", type=Path, help="write thumbnails of every candidate and stop")
    args = parser.parse_args(argv)
    roots = fetch_packages(args.work, update=not args.no_update)
    if args.contact_sheet:
        contact_sheet(roots, args.contact_sheet)
        return 0
    if args.refresh_list:
        records = select(roots)
        document = {"about": "Camera photographs from Debian wallpaper packages, for training (TRAIN) and the "
                             "independent check set (CHECK). Never shipped; rebuilt by tools/build_scene_pool.py.",
                    "packages": {p: sorted(d.name for d in args.work.glob(f"{p}_*.deb"))[-1] for p in PACKAGES},
                    "excluded_by_eye": NOT_PHOTOGRAPHS, "kept_by_eye": PHOTOGRAPHS_FAILING_TEST,
                    "scenes": records}
        args.list.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    records = read_scene_list(args.list)
    copy_pool(records, roots, args.out)
    counts = {split: sum(r["split"] == split for r in records) for split in SPLITS}
    print(f"{len(records)} scenes in {args.out} ({counts}); list {args.list}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

