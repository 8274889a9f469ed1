"""Write the shipped example workflows (UI format + API twins), their input photos and thumbnails.

    python tools/make_workflows.py            # workflows/*.json and workflows/api/*.json
    python tools/make_workflows.py --inputs   # also workflows/inputs/ (from scikit-image's data)
    python tools/make_workflows.py --thumbs   # also workflows/*.jpg: runs each workflow (needs its bank)

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
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import comfy_stubs  # noqa: E402

WORKFLOWS = ROOT / "workflows"
INPUTS = WORKFLOWS / "inputs"
EMBEDDED = "embedded-ffdnet (built in)"
BANK = "embedded-ffdnet"

# node id -> (class, {widget: value}, {socket: (from node, slot)}, (column, row))
Spec = dict[int, tuple[str, dict, dict, tuple[int, int]]]
LOADERS: Spec = {
    2: ("UIR_BackboneLoader", {"backbone": EMBEDDED, "device": "auto", "dtype": "fp32"}, {}, (0, 1)),
    3: ("UIR_LoraBankLoader", {"bank": BANK}, {"backbone": (2, 0)}, (1, 1)),
}
AUTO: Spec = {
    4: ("UIR_DegradationEstimator", {"top_k": 0, "temperature": 0.0, "normalisation": "bank default"},
        {"image": (1, 0), "bank": (3, 0)}, (2, 0)),
    5: ("UIR_LoraComposer", {"mode": "auto", "weights": "", "fused": True}, {"bank": (3, 0), "routing": (4, 0)},
        (3, 1)),
}
RESTORE = {"strength": 1.0, "tile": 512, "seed": 0, "spatial": False}
WORKFLOW_SPECS: dict[str, tuple[str, Spec]] = {
    "uir_automatic_restore": (
        "Automatic restore: the router looks at the photo, picks and weights the LoRAs, the backbone restores.",
        {1: ("UIR_ExampleImage", {"image": "chelsea_noise25.png"}, {}, (0, 0)), **LOADERS, **AUTO,
         6: ("UIR_Restore", RESTORE, {"image": (1, 0), "backbone": (2, 0), "composition": (5, 0)}, (4, 0)),
         7: ("SaveImage", {"filename_prefix": "uir_lora/restored"}, {"images": (6, 0)}, (5, 0))}),
    "uir_manual_blend": (
        "Manual blend: no router; type the LoRA weights yourself (here JPEG artefacts plus a little noise).",
        {1: ("UIR_ExampleImage", {"image": "coffee_jpeg10.jpg"}, {}, (0, 0)), **LOADERS,
         5: ("UIR_LoraComposer", {"mode": "manual", "weights": "jpeg=0.8,noise=0.2", "fused": True},
             {"bank": (3, 0)}, (2, 1)),
         6: ("UIR_Restore", RESTORE, {"image": (1, 0), "backbone": (2, 0), "composition": (5, 0)}, (3, 0)),
         7: ("SaveImage", {"filename_prefix": "uir_lora/blend"}, {"images": (6, 0)}, (4, 0))}),
    "uir_mixed_degradation_demo": (
        "Mixed degradation demo: damage a clean photo (noise + JPEG), estimate, compose, restore, and compare "
        "PSNR/SSIM of the damaged and the restored photo against the clean one.",
        {1: ("UIR_SyntheticDegrade", {"kind": "noise", "second_kind": "jpeg", "severity": 0.5, "seed": 7},
             {"image": (8, 0)}, (1, 0)),
         8: ("UIR_ExampleImage", {"image": "astronaut.png"}, {}, (0, 0)), **LOADERS, **AUTO,
         6: ("UIR_Restore", RESTORE, {"image": (1, 0), "backbone": (2, 0), "composition": (5, 0)}, (4, 0)),
         7: ("SaveImage", {"filename_prefix": "uir_lora/demo"}, {"images": (6, 0)}, (5, 0)),
         9: ("PreviewImage", {}, {"images": (1, 0)}, (1, 2)),
         10: ("UIR_Compare", {}, {"image": (1, 0), "reference": (8, 0)}, (2, 2)),
         11: ("UIR_Compare", {}, {"image": (6, 0), "reference": (8, 0)}, (5, 2))}),
    "sd_turbo_restore": (  # sd-turbo family (docs/sd_turbo.md): runs only with the user's own weights and bank
        "SD-Turbo backbone (one step, img2img-turbo style). Needs your own weights: sd_turbo.safetensors "
        "(stabilityai/sd-turbo) in ComfyUI/models/checkpoints/, or pick a diffusers folder from models/diffusers/ "
        "in the Backbone Loader, and a LoRA bank trained on exactly those weights in ComfyUI/models/uir_lora/sd-turbo/ "
        "(uir-lora train-lora --backbone sd-turbo --backbone-path <file> --bank <folder> --bf16). Without them the "
        "loaders stop and name the file and folder expected. bf16 needs a GPU; on a CPU choose fp32 (very slow).",
        {1: ("UIR_ExampleImage", {"image": "chelsea_noise25.png"}, {}, (0, 0)),
         2: ("UIR_BackboneLoader", {"backbone": "sd-turbo | checkpoints/sd_turbo.safetensors", "device": "auto",
                                    "dtype": "bf16"}, {}, (0, 1)),
         3: ("UIR_LoraBankLoader", {"bank": "sd-turbo"}, {"backbone": (2, 0)}, (1, 1)), **AUTO,
         6: ("UIR_Restore", RESTORE, {"image": (1, 0), "backbone": (2, 0), "composition": (5, 0)}, (4, 0)),
         7: ("SaveImage", {"filename_prefix": "uir_lora/sd_turbo"}, {"images": (6, 0)}, (5, 0))}),
}


def schemas() -> dict[str, comfy_stubs.Schema]:
    with comfy_stubs.stubbed_pack(Path(tempfile.mkdtemp())) as pack:
        found = {cls.GET_SCHEMA().node_id: cls.GET_SCHEMA() for cls in pack.nodes.NODES}
    return {**found, **comfy_stubs.CORE_SCHEMAS}


def to_api(spec: Spec) -> dict:
    return {str(nid): {"class_type": cls, "inputs": {**widgets, **{k: [str(a), b] for k, (a, b) in sockets.items()}},
                       "_meta": {"title": cls}}
            for nid, (cls, widgets, sockets, _) in sorted(spec.items())}


def to_ui(name: str, spec: Spec, note: str, known: dict[str, comfy_stubs.Schema]) -> dict:
    links, nodes = [], []
    for nid, (cls, _w, sockets, _) in sorted(spec.items()):
        inputs = [i for i in known[cls].inputs if not i.is_widget]
        for name, (src, slot) in sockets.items():
            to_slot = [i.id for i in inputs].index(name)
            links.append([len(links) + 1, src, slot, nid, to_slot, known[spec[src][0]].outputs[slot].io_type])
    for order, (nid, (cls, widgets, _s, (col, row))) in enumerate(sorted(spec.items())):
        schema = known[cls]
        values = []
        for i in (i for i in schema.inputs if i.is_widget):
            values.append(widgets[i.id])
            if i.control_after_generate:
                values.append("fixed")  # the UI's "control after generate" entry; fixed keeps results repeatable
        nodes.append({
            "id": nid, "type": cls, "pos": [40 + 360 * col, 40 + 330 * row], "size": [320, 100 + 26 * len(values)],
            "flags": {}, "order": order, "mode": 0,
            "inputs": [{"name": i.id, "type": i.io_type, "link": next((ln[0] for ln in links if ln[3] == nid
                                                                       and ln[4] == k), None)}
                       for k, i in enumerate(x for x in schema.inputs if not x.is_widget)],
            "outputs": [{"name": o.display_name or o.io_type, "type": o.io_type, "slot_index": k,
                         "links": [ln[0] for ln in links if ln[1] == nid and ln[2] == k]}
                        for k, o in enumerate(schema.outputs)],
            "properties": {"Node name for S&R": cls}, "widgets_values": values})
    last = max(spec) + 1
    nodes.append({"id": last, "type": "Note", "pos": [40, -170], "size": [680, 130], "flags": {}, "order": len(nodes),
                  "mode": 0, "inputs": [], "outputs": [], "properties": {}, "widgets_values": [note]})
    workflow_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"uir-lora/{name}"))  # the frontend wants a UUID
    return {"id": workflow_id, "revision": 0, "last_node_id": last, "last_link_id": len(links),
            "nodes": nodes, "links": links, "groups": [], "config": {},
            "extra": {"ds": {"scale": 0.62, "offset": [30, 230]}}, "version": 0.4}


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


def write_thumbnail(name: str, spec: Spec) -> None:
    """Input and output side by side, from running the API twin through the engine (tests' executor)."""
    with comfy_stubs.stubbed_pack(Path(tempfile.mkdtemp())) as pack:
        classes = {cls.GET_SCHEMA().node_id: cls for cls in pack.nodes.NODES}
        outputs, uis = comfy_stubs.run_prompt(classes, to_api(spec))
    source = next(str(n) for n, s in spec.items() if s[0] == "UIR_Restore")
    before = outputs[str(spec[int(source)][2]["image"][0])][0][0]
    after = outputs[source][0][0]
    pair = torch.cat([before, after], dim=1)
    image = Image.fromarray((pair * 255).round().byte().numpy())
    image.thumbnail((512, 256))
    image.save(WORKFLOWS / f"{name}.jpg", quality=85)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", action="store_true", help="(re)write workflows/inputs/ from scikit-image data")
    parser.add_argument("--thumbs", action="store_true", help="(re)write the .jpg thumbnails by running each workflow")
    args = parser.parse_args()
    if args.inputs:
        write_inputs()
    known = schemas()
    (WORKFLOWS / "api").mkdir(parents=True, exist_ok=True)
    for name, (note, spec) in WORKFLOW_SPECS.items():
        (WORKFLOWS / f"{name}.json").write_text(json.dumps(to_ui(name, spec, note, known), indent=1) + "\n")
        (WORKFLOWS / "api" / f"{name}.json").write_text(json.dumps(to_api(spec), indent=1) + "\n")
        if args.thumbs and all(s[1].get("backbone", EMBEDDED) == EMBEDDED for s in spec.values()):
            write_thumbnail(name, spec)  # user-weight workflows (sd_turbo_restore) keep a hand-made thumbnail
        print("wrote", name)


if __name__ == "__main__":
    main()
