"""One kind's LoRA as the weighted average of two banks' LoRAs of that kind, written as a new bank to adopt from.

    python tools/average_loras.py BANK_A BANK_B KIND --share-of-a 0.5 --out NEW_BANK
    python tools/adopt_loras.py NEW_BANK lora_bank/embedded-ffdnet KIND --force

A LoRA is a weight change B·A per adapted layer; the average of two is ``share·ΔW_a + (1 − share)·ΔW_b``, cut back
to the entry's rank by SVD (the largest singular values kept; the share of the change's energy kept is printed).
NEW_BANK is a copy of BANK_B with KIND's file replaced and its provenance naming both sources, so
tools/adopt_loras.py takes it as it takes a trained bank. Both LoRAs must share rank, alpha and targets.

peft's ``add_weighted_adapter(..., combination_type="svd")`` does this on a ``LoraModel``; the bank's backbones
inject their adapters into plain modules (``inject_adapter_in_model``), which have no such method, so the few
lines of the merge are written here.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

from uir_lora.bank.manifest import read_manifest
from uir_lora.bank.store import read_lora_file
from uir_lora.bank.writer import add_lora


def _layer_change(state: dict[str, torch.Tensor], up_key: str, down_key: str) -> torch.Tensor:
    """A layer's weight change B·A as [out, in·kernel] (before the LoRA's alpha / rank scale, which both share)."""
    return state[up_key].flatten(1).double() @ state[down_key].flatten(1).double()


def average_lora_states(state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor],
                        share_of_a: float) -> tuple[dict[str, torch.Tensor], float]:
    """The weighted average of two LoRA states of the same shapes, at their rank; and the least share of a
    layer's averaged change that the rank keeps (1.0: nothing cut)."""
    if state_a.keys() != state_b.keys() or any(state_a[k].shape != state_b[k].shape for k in state_a):
        raise ValueError("the two LoRAs differ in layers or shapes: they must share rank and targets")
    averaged: dict[str, torch.Tensor] = {}
    least_kept = 1.0
    for down_key in (key for key in state_a if ".lora_A." in key):
        up_key = down_key.replace(".lora_A.", ".lora_B.")
        rank = state_a[down_key].shape[0]
        delta = (share_of_a * _layer_change(state_a, up_key, down_key)
                 + (1.0 - share_of_a) * _layer_change(state_b, up_key, down_key))
        u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        kept = min(rank, s.shape[0])
        total = float((s**2).sum())
        least_kept = min(least_kept, float((s[:kept] ** 2).sum()) / total if total > 0 else 1.0)
        root = s[:kept].sqrt()
        up = torch.zeros(delta.shape[0], rank, dtype=torch.double)
        down = torch.zeros(rank, delta.shape[1], dtype=torch.double)
        up[:, :kept] = u[:, :kept] * root
        down[:kept] = root[:, None] * vh[:kept]
        averaged[up_key] = up.to(state_a[up_key].dtype).reshape(state_a[up_key].shape).contiguous()
        averaged[down_key] = down.to(state_a[down_key].dtype).reshape(state_a[down_key].shape).contiguous()
    if averaged.keys() != state_a.keys():
        raise ValueError("a LoRA state holds tensors other than lora_A / lora_B pairs")
    return averaged, least_kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bank_a", type=Path)
    parser.add_argument("bank_b", type=Path)
    parser.add_argument("kind")
    parser.add_argument("--share-of-a", type=float, default=0.5)
    parser.add_argument("--out", type=Path, required=True, help="new bank folder (a copy of BANK_B)")
    args = parser.parse_args(argv)
    if not 0.0 <= args.share_of_a <= 1.0:
        parser.error(f"--share-of-a must be in [0, 1], got {args.share_of_a}")
    if args.out.exists():
        parser.error(f"{args.out} exists; choose a new folder")
    manifest_a, manifest_b = read_manifest(args.bank_a), read_manifest(args.bank_b)
    if args.kind not in manifest_a.names or args.kind not in manifest_b.names:
        parser.error(f"{args.kind!r} is not in both banks")
    entry_a, entry_b = manifest_a.lora(args.kind), manifest_b.lora(args.kind)
    if (entry_a.rank, entry_a.alpha, entry_a.target_modules) != (entry_b.rank, entry_b.alpha, entry_b.target_modules):
        parser.error(f"{args.kind}: rank/alpha/targets differ between the banks")
    try:
        state, kept = average_lora_states(read_lora_file(args.bank_a / entry_a.file),
                                          read_lora_file(args.bank_b / entry_b.file), args.share_of_a)
    except ValueError as error:
        parser.error(f"{args.kind}: {error}")
    shutil.copytree(args.bank_b, args.out)
    manifest = read_manifest(args.out)
    entry = manifest.lora(args.kind)
    # the training behind the average: both sources' steps (a bank's record of how a LoRA was made)
    steps = int(entry_a.provenance.get("steps", 0)) + int(entry_b.provenance.get("steps", 0))
    entry.provenance = {"recipe": "average", "steps": steps, "share_of_a": args.share_of_a,
                        "energy_kept": round(kept, 6),
                        "a": {"bank": str(args.bank_a), "provenance": entry_a.provenance},
                        "b": {"bank": str(args.bank_b), "provenance": entry_b.provenance},
                        "command": " ".join(["python tools/average_loras.py", *(argv or sys.argv[1:])])}
    entry.validation = {}
    add_lora(args.out, entry, state, replace=True)
    print(f"{args.kind}: {args.share_of_a:g} of {args.bank_a} + {1 - args.share_of_a:g} of {args.bank_b} -> "
          f"{args.out} (least energy kept {kept:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
