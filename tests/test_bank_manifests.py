"""Hostile bank manifests and names: the project's typed error every time, nothing half-attached,
conditioning within the backbone's range, `bank list` still useful with a broken bank, and error
classes whose names read well in ComfyUI's dialog."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import pickle
from pathlib import Path

import pytest

from uir_lora.bank.manifest import read_manifest
from uir_lora.bank.store import open_bank
from uir_lora.errors import BankError, InputError, UIRError, UnsafePathError
from uir_lora.lab import cli
from uir_lora.pipeline import load_bank


def edit_manifest(bank_dir: Path, mutate) -> None:
    data = json.loads((bank_dir / "manifest.json").read_text())
    mutate(data)
    (bank_dir / "manifest.json").write_text(json.dumps(data))


def adapters_and_configs(backbone) -> tuple[list[str], list[str]]:
    return backbone.adapter_names(), sorted(getattr(backbone.adapter_root, "peft_config", {}))


def nest(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"x": value}
    return value


RAW_DAMAGE = {
    # deep enough to pass json.loads, too deep for anything that walks it recursively afterwards
    "deep-provenance": (lambda text: text.replace('"provenance": {', '"provenance": {"deep": '
                                                  + json.dumps(nest(900)) + ", ", 1), "nested"),
    "huge-rank": (lambda text: text.replace('"rank": 2', '"rank": ' + "9" * 5000, 1), "digits"),
    "huge-embedding-int": (lambda text: text.replace('"embedding": [', '"embedding": [' + "9" * 400 + ", ", 1),
                           "digits|NaN or Inf"),
    "huge-conditioning-int": (lambda text: text.replace('"sigma": ', '"sigma": ' + "9" * 400 + " + 0 * ", 1)
                              .replace(" + 0 * ", ', "_": ', 1), "digits|conditioning"),
}


@pytest.mark.parametrize("damage", list(RAW_DAMAGE))
def test_raw_manifest_damage_is_a_bank_error(random_bank, own_backbone, damage):
    mutate, message = RAW_DAMAGE[damage]
    path = random_bank.root / "manifest.json"
    path.write_text(mutate(json.dumps(json.loads(path.read_text()), indent=1)))
    before = adapters_and_configs(own_backbone)
    with pytest.raises(BankError, match=message):
        open_bank(random_bank.root).attach(own_backbone)
    assert adapters_and_configs(own_backbone) == before


EDITS = {
    "name-newline": (lambda m: m["loras"][0].update(name="noise\n"), "must match"),
    "file-newline": (lambda m: m["loras"][0].update(file=m["loras"][0]["file"] + "\n"), "plain"),
    "bank-name-escape": (lambda m: m.update(name="tiny\x1b[2J"), "control"),
    "bank-name-long": (lambda m: m.update(name="b" * 300), "255 bytes"),
    "family-newline": (lambda m: m.update(backbone_family="embedded-ffdnet\n"), "control"),
    "target-newline": (lambda m: m["loras"][0].update(target_modules=["model.0\n"]), "control"),
    "description-escape": (lambda m: m["loras"][0].update(description="\x1b]0;owned\x07"), "control"),
    "conditioning-key": (lambda m: m["loras"][0].update(conditioning={"sigma\n": 0.1}), "conditioning"),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_manifest_strings_with_control_characters_refused(random_bank, edit):
    mutate, message = EDITS[edit]
    edit_manifest(random_bank.root, mutate)
    with pytest.raises(BankError, match=message):
        open_bank(random_bank.root)


@pytest.mark.parametrize("name", ["my.bank", "tiny v2 (copy)", "bänk"])
def test_any_bank_name_attaches_cleanly(random_bank, own_backbone, photo, name):
    from uir_lora.pipeline import restore

    edit_manifest(random_bank.root, lambda m: m.update(name=name))
    bank = open_bank(random_bank.root)
    adapters = bank.attach(own_backbone)
    assert all("." not in adapter for adapter in adapters.values())
    restored, _ = restore(photo, own_backbone, bank, manual={"noise": 1.0})
    assert restored.shape == photo.shape


def test_failed_injection_leaves_no_adapter(random_bank, own_backbone, monkeypatch):
    """Whatever peft raises while injecting, nothing of the adapter stays and the error is a BankError."""
    before = adapters_and_configs(own_backbone)
    calls = []

    def flaky_inject(name, config):
        calls.append(name)
        original(name, config)
        if len(calls) == 2:  # the second adapter is half-made when peft fails
            raise KeyError('module name can\'t contain "."')

    original = own_backbone.inject_adapter
    monkeypatch.setattr(own_backbone, "inject_adapter", flaky_inject)
    with pytest.raises(BankError, match="KeyError"):
        open_bank(random_bank.root).attach(own_backbone)
    assert adapters_and_configs(own_backbone) == before


@pytest.mark.parametrize("sigma", [1e30, -1.0, 1.5])
def test_conditioning_outside_the_backbone_range_refused(random_bank, own_backbone, sigma):
    edit_manifest(random_bank.root, lambda m: m["loras"][1]["conditioning"].update(sigma=sigma))
    before = adapters_and_configs(own_backbone)
    with pytest.raises(BankError, match=r"sigma .* outside \[0, 1\]"):
        open_bank(random_bank.root).attach(own_backbone)
    assert adapters_and_configs(own_backbone) == before


@pytest.mark.parametrize("name, message", [(".", "model folder itself"), ("./", "model folder itself"),
                                           ("n" * 300, "255 bytes")], ids=["dot", "dot-slash", "long"])
def test_bank_names_that_are_no_bank(random_bank, name, message):
    with pytest.raises(UnsafePathError, match=message):
        load_bank(name, [random_bank.root.parent])


@pytest.mark.parametrize("name", [".", "n" * 300])
def test_cli_bank_name_that_is_no_bank(random_bank, tmp_path, capsys, name):
    from PIL import Image

    Image.new("RGB", (16, 16)).save(tmp_path / "in.png")
    code = cli.main(["restore", str(tmp_path / "in.png"), "--bank", name, "--bank-dir", str(random_bank.root.parent),
                     "--weights", "noise=1"])
    err = capsys.readouterr().err
    assert code == 2 and "uir-lora: error:" in err and "Traceback" not in err


def test_bank_list_names_the_broken_bank_and_lists_the_rest(random_bank, capsys):
    broken = random_bank.root.parent / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{oops")
    code = cli.main(["bank", "list", "--bank-dir", str(random_bank.root.parent)])
    out, err = capsys.readouterr()
    assert code == 1
    assert "tiny" in out and "3 LoRAs" in out  # the good bank
    assert "broken" in out and "not valid JSON" in out and "broken" in err


def _full_type_name(cls: type) -> str:
    """How ComfyUI titles an exception in its error dialog (execution.py's full_type_name)."""
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def test_error_dialog_title_hides_the_install_path():
    # ComfyUI imports a pack under a module name made from its folder's path; reproduce that here
    errors_file = Path(__file__).resolve().parent.parent / "uir_lora" / "errors.py"
    module_name = "/opt/ComfyUI/custom_nodes/comfyui-uir-lora.uir_lora.errors"
    spec = importlib.util.spec_from_file_location(module_name, errors_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in ("UIRError", "InputError", "BankError", "BackboneError", "UnsafePathError", "RestoreInterrupted"):
        title = _full_type_name(getattr(module, name))
        assert title == f"uir_lora.{name}", title


@pytest.mark.parametrize("error", [InputError("bad weight"), BankError("bad bank"), UnsafePathError("../x")])
def test_errors_survive_pickling(error):
    copy_of = pickle.loads(pickle.dumps(error))
    assert type(copy_of) is type(error) and str(copy_of) == str(error) and isinstance(copy_of, UIRError)


def test_replacing_a_lora_keeps_its_place(random_bank):
    """add_lora(replace=True) updates the entry where it stands: the entries' order is the router's order of kinds."""
    from uir_lora.bank.store import read_lora_file
    from uir_lora.bank.writer import add_lora

    before = read_manifest(random_bank.root)
    middle = before.loras[1]
    state = read_lora_file(random_bank.root / middle.file)
    updated = dataclasses.replace(middle, description="retrained")
    add_lora(random_bank.root, updated, state, replace=True)
    after = read_manifest(random_bank.root)
    assert after.names == before.names and after.loras[1].description == "retrained"
    assert [e for i, e in enumerate(after.loras) if i != 1] == [e for i, e in enumerate(before.loras) if i != 1]
