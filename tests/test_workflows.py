"""Every shipped workflow: valid against the node schemas (UI format), the same graph as its API twin,
and runnable through the engine (API format, executed node by node against the ComfyUI fakes)."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "workflows"
UI_FILES = sorted(WORKFLOWS.glob("*.json"))
AUTOMATIC = WORKFLOWS / "Automatic restore - the router picks the LoRAs.json"
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
PYTHON_TYPES = {"INT": (int,), "FLOAT": (int, float), "STRING": (str,), "BOOLEAN": (bool,)}


@pytest.fixture()
def schemas(pack, models, comfy_fakes) -> dict:
    """Every node type a workflow may hold: the pack's, against a fresh models folder, and the core ones."""
    return {**{cls.GET_SCHEMA().node_id: cls.GET_SCHEMA() for cls in pack.nodes.NODES}, **comfy_fakes.CORE_SCHEMAS}


@pytest.fixture(scope="session")
def ui_only(comfy_fakes) -> set[str]:
    """Node types that live only in the UI format (notes): no schema, dropped from API prompts."""
    return set(comfy_fakes.UI_ONLY)


def widget_errors(node: dict, schema, file_options: set[str]) -> list[str]:
    """Check widgets_values positionally against the schema's widget inputs (+ control_after_generate)."""
    errors, values = [], list(node.get("widgets_values", []))
    for spec in (i for i in schema.inputs if i.is_widget):
        if not values:
            return errors + [f"node {node['id']}: no value for widget {spec.id!r}"]
        value = values.pop(0)
        if spec.io_type == "COMBO":
            if value not in spec.options and spec.id not in file_options:
                errors.append(f"node {node['id']}: {spec.id}={value!r} not in {spec.options}")
        elif not isinstance(value, PYTHON_TYPES[spec.io_type]) or (spec.io_type == "BOOLEAN") != isinstance(
                value, bool):
            errors.append(f"node {node['id']}: {spec.id}={value!r} is not {spec.io_type}")
        elif spec.min is not None and not spec.min <= value <= spec.max:
            errors.append(f"node {node['id']}: {spec.id}={value} outside [{spec.min}, {spec.max}]")
        if spec.control_after_generate and (not values or values.pop(0) not in CONTROL_VALUES):
            errors.append(f"node {node['id']}: {spec.id} lacks its control_after_generate entry")
    return errors + ([f"node {node['id']}: extra widget values {values}"] if values else [])


def link_errors(workflow: dict, schemas: dict, ui_only: set[str]) -> list[str]:
    nodes = {n["id"]: n for n in workflow["nodes"]}
    errors = []
    for link_id, src, src_slot, dst, dst_slot, kind in workflow["links"]:
        out_type = schemas[nodes[src]["type"]].outputs[src_slot].io_type
        target = nodes[dst]["inputs"][dst_slot]
        sockets = {i.id: i.io_type for i in schemas[nodes[dst]["type"]].inputs}
        if not out_type == kind == sockets.get(target["name"]) == target["type"]:
            errors.append(f"link {link_id}: {out_type} -> {target['name']} "
                          f"({sockets.get(target['name'])}); the link says {kind}")
        if target["link"] != link_id or link_id not in nodes[src]["outputs"][src_slot]["links"]:
            errors.append(f"link {link_id} is not recorded on both of its nodes")
    for node in nodes.values():
        if node["type"] in ui_only:
            continue
        required = {i.id for i in schemas[node["type"]].inputs if not i.is_widget and not i.optional}
        linked = {i["name"] for i in node["inputs"] if i["link"] is not None}
        errors += [f"node {node['id']} ({node['type']}): required input {r!r} unconnected" for r in required - linked]
    return errors


def ui_to_api(workflow: dict, schemas: dict, ui_only: set[str]) -> dict:
    """What the frontend's graphToPrompt gives for these simple graphs (no reroutes, groups or muted nodes)."""
    links = {ln[0]: ln for ln in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in ui_only:
            continue
        values, inputs = list(node.get("widgets_values", [])), {}
        for spec in (i for i in schemas[node["type"]].inputs if i.is_widget):
            inputs[spec.id] = values.pop(0)
            if spec.control_after_generate:
                values.pop(0)
        for socket in node["inputs"]:
            if socket["link"] is not None:
                _, src, slot, *_ = links[socket["link"]]
                inputs[socket["name"]] = [str(src), slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def missing_backbone(prompt: dict, pack) -> str | None:
    """The backbone file a workflow needs but this machine lacks (user-supplied weights), else None."""
    for node in prompt.values():
        if node["class_type"] == "UIR_BackboneLoader":
            message = pack.nodes.loaders.UIR_BackboneLoader.validate_inputs(node["inputs"]["backbone"])
            if message is not True:
                return message
    return None


def api_twin(path: Path) -> Path:
    """The API twin a UI workflow names in extra.uir_lora (UI files are named by their title)."""
    return WORKFLOWS / json.loads(path.read_text())["extra"]["uir_lora"]["api_twin"]


def test_there_are_workflows():
    names = {api_twin(p).stem for p in UI_FILES}
    assert {"uir_automatic_restore", "uir_manual_blend", "uir_mixed_degradation_demo"} <= names
    assert {p.name for p in (WORKFLOWS / "api").glob("*.json")} == {api_twin(p).name for p in UI_FILES}


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_ui_workflow_matches_schemas_and_api_twin(path: Path, schemas, ui_only):
    workflow = json.loads(path.read_text())
    assert workflow.get("version") == 0.4
    unknown = {n["type"] for n in workflow["nodes"]} - set(schemas) - ui_only
    assert not unknown, f"unknown node types {unknown}"
    errors = link_errors(workflow, schemas, ui_only)
    for node in workflow["nodes"]:
        if node["type"] not in ui_only:
            # backbone/bank combos list files on the user's machine: checked when the workflow runs
            errors += widget_errors(node, schemas[node["type"]], {"backbone", "bank"})
    assert not errors, "\n".join(errors)
    api = json.loads(api_twin(path).read_text())
    assert {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()} == ui_to_api(
        workflow, schemas, ui_only)
    assert path.with_suffix(".jpg").is_file(), "every workflow needs a .jpg thumbnail (Browse Templates shows it)"


def test_checks_catch_broken_workflows(schemas, ui_only):
    workflow = json.loads(AUTOMATIC.read_text())
    restore = next(n for n in workflow["nodes"] if n["type"] == "UIR_Restore")
    restore["widgets_values"][1] = 5  # tile below its minimum
    assert any("tile=5 outside" in e for e in widget_errors(restore, schemas["UIR_Restore"], set()))
    restore["widgets_values"].pop()  # one value short
    assert any("no value for widget 'spatial'" in e for e in widget_errors(restore, schemas["UIR_Restore"], set()))
    workflow["links"][0][5] = "MASK"
    assert link_errors(workflow, schemas, ui_only)


@pytest.mark.parametrize("path", sorted((WORKFLOWS / "api").glob("*.json")), ids=lambda p: p.stem)
def test_api_workflow_runs_through_the_engine(path: Path, pack, nodes, schemas, comfy_fakes, tmp_path,
                                              embedded_backbone, encoder_dim):
    prompt = json.loads(path.read_text())
    missing = missing_backbone(prompt, pack)
    if missing:
        pytest.skip(f"needs user weights: {missing}")
    banks = {n["inputs"]["bank"] for n in prompt.values() if n["class_type"] == "UIR_LoraBankLoader"}
    stand_ins = [b for b in banks if b not in pack.uir_lora.pipeline.list_banks()]
    for bank in stand_ins:  # a bank the pack does not ship: random LoRAs with the same name, so the graph runs
        from uir_lora.lab.testing.banks import make_random_bank

        make_random_bank(tmp_path / "uir_lora", embedded_backbone, dim=encoder_dim, bank_name=bank)
    outputs, uis = comfy_fakes.run_prompt(nodes, prompt)
    saved = [uis[nid]["images"] for nid, n in prompt.items() if n["class_type"] in comfy_fakes.CORE_SCHEMAS]
    assert saved, "the workflow has no output node"
    for image in saved:
        assert isinstance(image, torch.Tensor) and image.ndim == 4 and image.shape[-1] == 3
        assert 0 <= float(image.min()) <= float(image.max()) <= 1
    compares = [outputs[nid] for nid, n in prompt.items() if n["class_type"] == "UIR_Compare"]
    if len(compares) == 2 and not stand_ins:  # the demo's promise, with the shipped (trained) bank only
        (_, damaged_psnr, _), (_, restored_psnr, _) = compares
        print(f"{path.stem}: PSNR damaged {damaged_psnr:.2f} dB -> restored {restored_psnr:.2f} dB", file=sys.stderr)
        assert restored_psnr > damaged_psnr


SLOT, TITLE = 20, 30
"""The frontend's socket row height and title bar height (litegraph), for where links are drawn."""


def link_curve(start: tuple[float, float], end: tuple[float, float], steps: int = 80) -> list[tuple[float, float]]:
    """Points of a link as litegraph draws it: a cubic spline leaving and entering horizontally."""
    reach = math.dist(start, end) * 0.25
    points = [start, (start[0] + reach, start[1]), (end[0] - reach, end[1]), end]
    return [tuple((1 - t) ** 3 * points[0][k] + 3 * t * (1 - t) ** 2 * points[1][k]
                  + 3 * t * t * (1 - t) * points[2][k] + t ** 3 * points[3][k] for k in (0, 1))
            for t in (i / steps for i in range(steps + 1))]


def links_behind_sockets(workflow: dict) -> list[str]:
    """Links that run level behind another node at the height of its sockets: read as if it passed them on."""
    nodes = {n["id"]: n for n in workflow["nodes"]}

    def socket(node: dict, slot: int, output: bool) -> tuple[float, float]:
        return node["pos"][0] + (node["size"][0] if output else 0), node["pos"][1] + (slot + 0.7) * SLOT

    found = []
    for link_id, src, src_slot, dst, dst_slot, _ in workflow["links"]:
        points = link_curve(socket(nodes[src], src_slot, True), socket(nodes[dst], dst_slot, False))
        for node in nodes.values():
            if node["id"] in (src, dst):
                continue
            (x, y), (width, _) = node["pos"], node["size"]
            rows = max(len(node.get("inputs", [])), len(node.get("outputs", [])))
            level = [p for p, q in zip(points, points[1:]) if x <= p[0] <= x + width
                     and y - TITLE <= p[1] <= y + rows * SLOT + 10 and abs(q[1] - p[1]) < 0.35 * abs(q[0] - p[0])]
            if level:
                found.append(f"link {link_id} ({nodes[src]['type']} -> {nodes[dst]['type']}) runs behind "
                             f"{node['type']} near {tuple(round(v) for v in level[0])}")
    return found


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_links_never_run_behind_a_node(path: Path):
    assert not links_behind_sockets(json.loads(path.read_text()))


def test_link_check_catches_a_link_behind_a_node():
    workflow = json.loads(AUTOMATIC.read_text())
    nodes = {n["type"]: n for n in workflow["nodes"]}
    source, target = nodes["UIR_ExampleImage"], nodes["UIR_DegradationEstimator"]
    target["pos"] = [target["pos"][0], source["pos"][1]]  # the estimator moved onto the image's way to Restore
    assert any("runs behind UIR_DegradationEstimator" in f for f in links_behind_sockets(workflow))


def test_templates_are_listed_working_ones_first():
    script = (ROOT / "web" / "uir_lora.js").read_text()
    order = json.loads(re.search(r"const TEMPLATE_ORDER = (\[.*?\]);", script, re.S).group(1).replace(",\n]", "]"))
    assert sorted(order) == sorted(p.stem for p in UI_FILES)
    assert order[-1].startswith("SD-Turbo")  # the one that needs the user's weights and bank comes last
    for title in order:
        assert re.fullmatch(r"[A-Z][A-Za-z0-9 ,\-]+", title), f"{title!r}: the file name is the card's title"
        extra = json.loads((WORKFLOWS / f"{title}.json").read_text())["extra"]["uir_lora"]
        assert extra["description"] and extra["description"] != title


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_thumbnail_is_a_square_card(path: Path):
    from PIL import Image

    with Image.open(path.with_suffix(".jpg")) as thumbnail:
        assert thumbnail.width == thumbnail.height >= 256


def test_sd_turbo_template_says_what_it_needs_first():
    path = next(p for p in UI_FILES if p.stem.startswith("SD-Turbo"))
    note = next(n for n in json.loads(path.read_text())["nodes"] if n["type"] == "Note")["widgets_values"][0]
    first = note.split("\n")[0]
    assert "NEEDS" in first and "NOT SHIP" in first
    assert "models/checkpoints" in note and "uir-lora train-lora" in note and "models/uir_lora" in note


@pytest.mark.parametrize("path", sorted((WORKFLOWS / "api").glob("*.json")), ids=lambda p: p.stem)
def test_api_twins_carry_display_names(path: Path, schemas):
    for node in json.loads(path.read_text()).values():
        title = node["_meta"]["title"]
        assert title == schemas[node["class_type"]].display_name or title.startswith("Compare: "), title
