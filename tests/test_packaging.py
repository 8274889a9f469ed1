"""What a user installs: requirements.txt = pyproject's static dependencies, extras named when missing,
one pinned install command shared by the README and CI.

(peft itself depends on accelerate, so an inference install has it anyway; what is checked here is
that the pack's own code asks for it only where training or distributed restore need it.)"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from uir_lora.commands.distributed import ProcessShare
from uir_lora.errors import MissingExtraError
from uir_lora.extras import require
from uir_lora.lab.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
INSTALL = re.compile(r"^pip install -c constraints\.txt .*$", re.MULTILINE)


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirement_set(lines: list[str]) -> set[str]:
    return {str(Requirement(line)) for line in lines}


def _requirements_txt() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def test_requirements_txt_and_pyproject_declare_the_same_dependencies_statically():
    project = _pyproject()["project"]
    assert "dependencies" not in project.get("dynamic", []), "the Comfy Registry may not resolve dynamic ones"
    assert _requirement_set(project["dependencies"]) == _requirement_set(_requirements_txt())


def test_training_only_packages_are_extras_not_inference_requirements():
    inference = {canonicalize_name(Requirement(line).name) for line in _requirements_txt()}
    extras = _pyproject()["project"]["optional-dependencies"]
    assert "accelerate" not in inference
    for extra in ("train", "distributed", "test"):
        assert "accelerate" in {canonicalize_name(Requirement(r).name) for r in extras[extra]}, extra


def test_constraints_pin_every_package_the_tests_install():
    pinned = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            assert str(requirement.specifier).startswith("=="), line
            pinned[canonicalize_name(requirement.name)] = requirement
    wanted = _requirements_txt() + _pyproject()["project"]["optional-dependencies"]["test"] + ["piq"]
    missing = {canonicalize_name(Requirement(r).name) for r in wanted} - pinned.keys()
    assert not missing, f"constraints.txt does not pin {sorted(missing)}"


def test_readme_and_ci_run_the_same_install_command():
    readme = INSTALL.findall((ROOT / "README.md").read_text())
    ci = INSTALL.findall((ROOT / ".ci" / "run").read_text())
    assert len(readme) == 1 and ci == readme


def test_a_missing_extra_is_named_with_its_install_line(monkeypatch, tmp_path, capsys):
    build_parser()  # the command modules (and peft, which imports accelerate itself) are loaded first
    monkeypatch.setitem(sys.modules, "accelerate", None)
    with pytest.raises(MissingExtraError, match=r'pip install "uir-lora\[distributed\]"'):
        require("accelerate", "distributed", "restoring over several processes")
    assert main(["train-lora", "--degradation", "noise", "--bank", str(tmp_path / "bank"), "--steps", "1"]) == 2
    assert 'pip install "uir-lora[train]"' in capsys.readouterr().err


def test_a_spandrel_backbone_without_spandrel_is_refused_with_its_install_line(monkeypatch, tmp_path, capsys):
    """Real-ESRGAN banks and users' upscale models need spandrel, which the base install does not have."""
    from safetensors.torch import save_file

    from uir_lora.images import save_image

    build_parser()
    for name in [n for n in sys.modules if n.split(".")[0] == "spandrel"] + ["spandrel"]:
        monkeypatch.setitem(sys.modules, name, None)  # as where it is not installed
    save_file({"conv_first.weight": torch.zeros(4, 3, 3, 3)}, str(tmp_path / "model.safetensors"))
    image = save_image(torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)), tmp_path / "in.png")
    for backbone in ("spandrel", "embedded-realesrgan"):
        assert main(["restore", str(image), "-o", str(tmp_path / f"{backbone}.png"), "--backbone", backbone,
                     "--backbone-path", str(tmp_path / "model.safetensors")]) == 2
        assert "pip install 'uir-lora[spandrel]'" in capsys.readouterr().err
        assert not (tmp_path / f"{backbone}.png").exists()


def test_a_broken_dependency_inside_a_present_package_is_not_called_missing(monkeypatch, tmp_path):
    (tmp_path / "uir_lora_probe.py").write_text("import uir_lora_absent_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as caught:
        require("uir_lora_probe", "train", "a probe")
    assert not isinstance(caught.value, MissingExtraError) and caught.value.name == "uir_lora_absent_dependency"


def test_one_process_never_asks_for_accelerate_and_a_launched_one_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "accelerate", None)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    alone = ProcessShare.current()
    assert alone.is_main and alone.split([3, 1, 2]) == [3, 1, 2]
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(MissingExtraError, match=r'uir-lora\[distributed\]'):
        ProcessShare.current()
