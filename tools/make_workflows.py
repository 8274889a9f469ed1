"""Write the shipped example workflows (UI format + API twins), their input photos and thumbnails.

    python tools/make_workflows.py            # workflows/*.json and workflows/api/*.json
    python tools/make_workflows.py --inputs   # also workflows/inputs/ (from scikit-image's data)
    python tools/make_workflows.py --thumbs   # also workflows/*.jpg: runs each workflow (needs its bank)
    python tools/make_workflows.py --icon     # also web/icon.png, the Comfy Registry icon

One description per workflow gives both formats, so the twins cannot drift apart. Node schemas
(input order, widgets, sockets) come from the node classes themselves, imported against the test
fakes of ComfyUI (tests/comfy_stubs.py); tests/test_workflows.py checks the result against them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import comfy_stubs  # noqa: E402

WORKFLOWS = ROOT / "workflows"
INPUTS = WORKFLOWS / "inputs"
ICON = ROOT / "web" / "icon.png"
EMBEDDED = "embedded-ffdnet (built in)"
BANK = "embedded-ffdnet"


@dataclass(frozen=True)
class Node:
    """One node: its class, widget values, linked inputs {socket: (from node, slot)}, and where it sits.

    Positions are laid out by hand so every link reads right: no link runs behind a node at the height
    of that node's sockets (it would look as if the node passed the value on).
    """

    cls: str
    widgets: dict
    sockets: dict
    pos: tuple[int, int]
    size: tuple[int, int] | None = None  # None: tall enough for its sockets and widgets
    title: str | None = None  # None: the node's display name


@dataclass(frozen=True)
class Workflow:
    title: str
    """The UI file's name: Browse Templates shows it as the card's title and description (frontend 1.27)."""
    stem: str
    """The API twin's name, workflows/api/<stem>.json (plain, for scripts)."""
    description: str
    note: str
    nodes: dict[int, Node]


# the estimator is made tall enough for its routing chart (13 LoRAs), so a run never grows it over a neighbour
ESTIMATOR_SIZE = (340, 440)
ESTIMATOR = {"top_k": 0, "temperature": 0.0, "normalisation": "bank default"}
RESTORE = {"strength": 1.0, "tile": 512, "seed": 0, "spatial": False}
COMPARE_SIZE = (340, 330)


def loaders(backbone: str = EMBEDDED, dtype: str = "fp32", bank: str = BANK, down: int = 0) -> dict[int, Node]:
    return {2: Node("UIR_BackboneLoader", {"backbone": backbone, "device": "auto", "dtype": dtype}, {},
                    (40, 300 + down)),
            3: Node("UIR_LoraBankLoader", {"bank": bank}, {"backbone": (2, 0)}, (400, 460 + down))}


def automatic(image: int, down: int = 0) -> dict[int, Node]:
    """Router lane below the image lane: the bank feeds the Composer above the estimator, not behind it."""
    return {4: Node("UIR_DegradationEstimator", ESTIMATOR, {"image": (image, 0), "bank": (3, 0)}, (760, 560 + down),
                    ESTIMATOR_SIZE),
            5: Node("UIR_LoraComposer", {"mode": "auto", "weights": "", "fused": True},
                    {"bank": (3, 0), "routing": (4, 0)}, (1160, 460 + down))}


def restore_and_save(image: int, prefix: str, pos: tuple[int, int] = (1560, 60),
                     save_pos: tuple[int, int] | None = None) -> dict[int, Node]:
    return {6: Node("UIR_Restore", RESTORE, {"image": (image, 0), "backbone": (2, 0), "composition": (5, 0)}, pos),
            7: Node("SaveImage", {"filename_prefix": prefix}, {"images": (6, 0)}, save_pos or (pos[0] + 360, pos[1]),
                    (340, 330))}


SD_TURBO_NOTE = (
    "NEEDS TWO THINGS THE PACK DOES NOT SHIP, so this template stops at the Backbone Loader until you add them:\n"
    "1. SD-Turbo weights (stabilityai/sd-turbo): sd_turbo.safetensors in ComfyUI/models/checkpoints/ (the loader "
    "lists names with 'turbo'), or a diffusers folder in ComfyUI/models/diffusers/.\n"
    "2. A LoRA bank trained on exactly those weights, in ComfyUI/models/uir_lora/sd-turbo/:\n"
    "   uir-lora train-lora --backbone sd-turbo --backbone-path <weights> --bank <folder> --bf16\n"
    "The loader checks both before loading anything and names what is missing. One step, img2img-turbo style "
    "(docs/sd_turbo.md). bf16 needs a GPU; on a CPU choose fp32 (very slow).")

WORKFLOW_LIST: list[Workflow] = [  # in the order Browse Templates lists them (web/uir_lora.js): working ones first
    Workflow(
        "Automatic restore - the router picks the LoRAs", "uir_automatic_restore",
        "A noisy photo restored by the LoRAs the router picks and weights.",
        "Automatic restore: the Degradation Estimator looks at the photo and weights the LoRAs that fit its damage "
        "(drawn on the node after a run), the Composer applies them, the backbone restores. Runs on a CPU, no "
        "download: the backbone and its bank ship with the pack. Load your own photo with a Load Image node instead "
        "of UIR Example Image.",
        {1: Node("UIR_ExampleImage", {"image": "chelsea_noise25.png"}, {}, (40, 60)),
         **loaders(), **automatic(1), **restore_and_save(1, "uir_lora/restored")}),
    Workflow(
        "Damage, restore, measure - PSNR and SSIM", "uir_mixed_degradation_demo",
        "A clean photo damaged with noise and JPEG, restored, and scored against the original.",
        "Damage, restore, measure: a clean photo gets noise and JPEG artefacts, the router picks the LoRAs, the "
        "backbone restores, and the two UIR Compare nodes show PSNR and SSIM of the damaged and of the restored "
        "photo against the clean one (numbers and images on the nodes after a run).",
        {8: Node("UIR_ExampleImage", {"image": "astronaut.png"}, {}, (40, 60)),
         1: Node("UIR_SyntheticDegrade", {"kind": "noise", "second_kind": "jpeg", "severity": 0.5, "seed": 7},
                 {"image": (8, 0)}, (400, 160)),
         **loaders(down=100), **automatic(1, down=100),
         **restore_and_save(1, "uir_lora/demo", pos=(1560, 240), save_pos=(1920, 620)),
         # the damaged pair arrives over the top lane, above Restore; the restored one sits beside Restore
         10: Node("UIR_Compare", {}, {"image": (1, 0), "reference": (8, 0)}, (2280, 60), COMPARE_SIZE,
                  "Compare: damaged vs clean"),
         11: Node("UIR_Compare", {}, {"image": (6, 0), "reference": (8, 0)}, (2280, 460), COMPARE_SIZE,
                  "Compare: restored vs clean")}),
    Workflow(
        "Manual blend - type the LoRA weights", "uir_manual_blend",
        "A JPEG photo restored with LoRA weights typed by hand.",
        "Manual blend: no router; the Composer's weights are typed by hand (here JPEG artefacts plus a little "
        "noise). Try other names and weights from the bank: noise, jpeg, haze, low_light, motion_blur, ...",
        {1: Node("UIR_ExampleImage", {"image": "coffee_jpeg10.jpg"}, {}, (40, 60)), **loaders(),
         5: Node("UIR_LoraComposer", {"mode": "manual", "weights": "jpeg=0.8,noise=0.2", "fused": True},
                 {"bank": (3, 0)}, (760, 460)),
         **restore_and_save(1, "uir_lora/blend", pos=(1160, 60))}),
    Workflow(
        "SD-Turbo backbone - bring your own weights and bank", "sd_turbo_restore",
        "Needs SD-Turbo weights and a bank you train; neither ships.",
        SD_TURBO_NOTE,
        {1: Node("UIR_ExampleImage", {"image": "chelsea_noise25.png"}, {}, (40, 60)),
         **loaders("sd-turbo | checkpoints/sd_turbo.safetensors", "bf16", "sd-turbo"), **automatic(1),
         **restore_and_save(1, "uir_lora/sd_turbo")}),
]


def schemas() -> dict[str, comfy_stubs.Schema]:
    with comfy_stubs.stubbed_pack(Path(tempfile.mkdtemp())) as pack:
        found = {cls.GET_SCHEMA().node_id: cls.GET_SCHEMA() for cls in pack.nodes.NODES}
    return {**found, **comfy_stubs.CORE_SCHEMAS}


def node_title(node: Node, known: dict[str, comfy_stubs.Schema]) -> str:
    return node.title or known[node.cls].display_name or node.cls


def to_api(workflow: Workflow, known: dict[str, comfy_stubs.Schema]) -> dict:
    return {str(nid): {"class_type": node.cls,
                       "inputs": {**node.widgets, **{k: [str(a), b] for k, (a, b) in node.sockets.items()}},
                       "_meta": {"title": node_title(node, known)}}
            for nid, node in sorted(workflow.nodes.items())}


def to_ui(workflow: Workflow, known: dict[str, comfy_stubs.Schema]) -> dict:
    spec = workflow.nodes
    links, nodes = [], []
    for nid, node in sorted(spec.items()):
        inputs = [i for i in known[node.cls].inputs if not i.is_widget]
        for name, (src, slot) in node.sockets.items():
            to_slot = [i.id for i in inputs].index(name)
            links.append([len(links) + 1, src, slot, nid, to_slot, known[spec[src].cls].outputs[slot].io_type])
    for order, (nid, node) in enumerate(sorted(spec.items())):
        schema = known[node.cls]
        values = []
        for i in (i for i in schema.inputs if i.is_widget):
            values.append(node.widgets[i.id])
            if i.control_after_generate:
                values.append("fixed")  # the UI's "control after generate" entry; fixed keeps results repeatable
        sockets = sum(1 for i in schema.inputs if not i.is_widget)
        size = node.size or (320, 30 + 22 * max(sockets, len(schema.outputs)) + 26 * len(values))
        entry = {
            "id": nid, "type": node.cls, "pos": list(node.pos), "size": list(size),
            "flags": {}, "order": order, "mode": 0,
            "inputs": [{"name": i.id, "type": i.io_type, "link": next((ln[0] for ln in links if ln[3] == nid
                                                                       and ln[4] == k), None)}
                       for k, i in enumerate(x for x in schema.inputs if not x.is_widget)],
            "outputs": [{"name": o.display_name or o.io_type, "type": o.io_type, "slot_index": k,
                         "links": [ln[0] for ln in links if ln[1] == nid and ln[2] == k]}
                        for k, o in enumerate(schema.outputs)],
            "properties": {"Node name for S&R": node.cls}, "widgets_values": values}
        if node.title:
            entry["title"] = node.title
        nodes.append(entry)
    last = max(spec) + 1
    nodes.append({"id": last, "type": "Note", "pos": [40, -200], "size": [900, 200], "flags": {},
                  "order": len(nodes), "mode": 0, "inputs": [], "outputs": [], "properties": {},
                  "widgets_values": [workflow.note]})
    workflow_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"uir-lora/{workflow.stem}"))  # the frontend wants a UUID
    return {"id": workflow_id, "revision": 0, "last_node_id": last, "last_link_id": len(links),
            "nodes": nodes, "links": links, "groups": [], "config": {},
            "extra": {"ds": {"scale": 0.5, "offset": [40, 260]},
                      # read by no frontend yet (custom templates show the file name); kept for tests and tools
                      "uir_lora": {"api_twin": f"api/{workflow.stem}.json", "description": workflow.description}},
            "version": 0.4}


def write_inputs() -> None:
    """Public-domain / CC0 photos from scikit-image, resized; two are damaged on purpose for the demos."""
    from skimage import data

    INPUTS.mkdir(parents=True, exist_ok=True)

    def resized(array: np.ndarray, short: int) -> Image.Image:
        image = Image.fromarray(array)
        scale = short / min(image.size)
        return image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)

    resized(data.astronaut(), 320).save(INPUTS / "astronaut.png", optimize=True)
    cat = torch.from_numpy(np.array(resized(data.chelsea(), 256))).float() / 255
    noisy = cat + torch.randn(cat.shape, generator=torch.Generator().manual_seed(0)) * 25 / 255  # sigma = 25
    noisy_u8 = (noisy.clamp(0, 1) * 255).round().byte().numpy()
    Image.fromarray(noisy_u8).save(INPUTS / "chelsea_noise25.png", optimize=True)
    resized(data.coffee(), 256).save(INPUTS / "coffee_jpeg10.jpg", quality=10)


THUMB = 512
"""Thumbnails are square: Browse Templates crops them to a square card."""


def label(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, size: int, anchor: str = "la") -> None:
    """White text on a dark box, readable on any photo at card size."""
    font = ImageFont.load_default(size=size)
    box = draw.textbbox(xy, text, font=font, anchor=anchor)
    draw.rectangle((box[0] - 8, box[1] - 6, box[2] + 8, box[3] + 6), fill=(0, 0, 0))
    draw.text(xy, text, font=font, fill=(255, 255, 255), anchor=anchor)


def split_view(before: torch.Tensor, after: torch.Tensor, zoom_to: int = THUMB, labelled: bool = True) -> Image.Image:
    """Left half before, right half after, of one zoomed centre crop: damage stays visible when shrunk to a card."""
    height, width = before.shape[:2]
    crop = int(min(height, width) * 0.6)
    top, left = (height - crop) // 2, (width - crop) // 2

    def zoomed(image: torch.Tensor) -> Image.Image:
        array = (image[top:top + crop, left:left + crop].clamp(0, 1) * 255).round().byte().numpy()
        return Image.fromarray(array).resize((zoom_to, zoom_to), Image.NEAREST)  # NEAREST: no smoothing of damage

    picture = zoomed(after)
    picture.paste(zoomed(before).crop((0, 0, zoom_to // 2, zoom_to)), (0, 0))
    draw = ImageDraw.Draw(picture)
    draw.rectangle((zoom_to // 2 - 3, 0, zoom_to // 2 + 2, zoom_to), fill=(255, 255, 255))
    if labelled:
        label(draw, (14, zoom_to - 14), "before", 40, "ld")
        label(draw, (zoom_to - 14, zoom_to - 14), "after", 40, "rd")
    return picture


def text_card(lines: list[str]) -> Image.Image:
    """A thumbnail for a template that cannot run out of the box: what it needs, in large type."""
    card = Image.new("RGB", (THUMB, THUMB), (38, 40, 48))
    draw = ImageDraw.Draw(card)
    y = 70
    for i, line in enumerate(lines):
        font = ImageFont.load_default(size=54 if i == 0 else 34)
        draw.text((THUMB // 2, y), line, font=font, fill=(240, 160, 40) if i == 0 else (230, 230, 230), anchor="ma")
        y += 100 if i == 0 else 52
    return card


def write_thumbnail(workflow: Workflow, known: dict[str, comfy_stubs.Schema]) -> None:
    """workflows/<title>.jpg: the Restore node's input and output, by running the API twin through the engine."""
    with comfy_stubs.stubbed_pack(Path(tempfile.mkdtemp())) as pack:
        classes = {cls.GET_SCHEMA().node_id: cls for cls in pack.nodes.NODES}
        outputs, _ = comfy_stubs.run_prompt(classes, to_api(workflow, known))
    source = next(nid for nid, node in workflow.nodes.items() if node.cls == "UIR_Restore")
    before = outputs[str(workflow.nodes[source].sockets["image"][0])][0][0]
    after = outputs[str(source)][0][0]
    split_view(before, after).save(WORKFLOWS / f"{workflow.title}.jpg", quality=88)


SD_TURBO_CARD = ["SD-Turbo", "needs your weights", "+ a bank you train", "(uir-lora train-lora)", "",
                 "neither ships"]


def write_icon() -> None:
    """web/icon.png, the registry icon: a noisy half and a restored half of the same gradient."""
    size = 256
    ramp = torch.linspace(0, 1, size)
    clean = torch.stack([ramp[None, :].expand(size, size), ramp[:, None].expand(size, size) * 0.6 + 0.2,
                         1 - ramp[None, :].expand(size, size) * 0.7], dim=-1)
    noisy = clean + torch.randn(clean.shape, generator=torch.Generator().manual_seed(0)) * 0.25
    icon = split_view(noisy, clean, zoom_to=size, labelled=False)
    label(ImageDraw.Draw(icon), (size // 2, size // 2), "UIR", 84, "mm")
    icon.resize((128, 128), Image.LANCZOS).save(ICON, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", action="store_true", help="(re)write workflows/inputs/ from scikit-image data")
    parser.add_argument("--thumbs", action="store_true", help="(re)write the .jpg thumbnails by running each workflow")
    parser.add_argument("--icon", action="store_true", help="(re)write web/icon.png, the registry icon")
    args = parser.parse_args()
    if args.inputs:
        write_inputs()
    if args.icon:
        write_icon()
    known = schemas()
    (WORKFLOWS / "api").mkdir(parents=True, exist_ok=True)
    for workflow in WORKFLOW_LIST:
        (WORKFLOWS / f"{workflow.title}.json").write_text(json.dumps(to_ui(workflow, known), indent=1) + "\n")
        (WORKFLOWS / "api" / f"{workflow.stem}.json").write_text(json.dumps(to_api(workflow, known), indent=1) + "\n")
        if args.thumbs:
            if all(n.widgets.get("backbone", EMBEDDED) == EMBEDDED for n in workflow.nodes.values()):
                write_thumbnail(workflow, known)
            else:  # user weights it cannot run with: a card saying what is needed
                text_card(SD_TURBO_CARD).save(WORKFLOWS / f"{workflow.title}.jpg", quality=88)
        print("wrote", workflow.title)


if __name__ == "__main__":
    main()
