"""Threads sharing one cached backbone: each restore gets its single-threaded output bit for bit,
concurrent attaches of one bank all succeed, and a LoRA file replaced on disk is picked up."""

from __future__ import annotations

import copy
import os
import threading

import pytest
import torch
from safetensors.torch import load_file, save_file

from uir_lora.bank.store import open_bank
from uir_lora.compose.composer import Composition
from uir_lora.sampler.restore import SamplerOptions, restore_batch

WEIGHT_SETS = [{"noise": 1.0}, {"haze": 0.8, "jpeg": 0.6}, {"jpeg": 1.5}, {"noise": -0.7, "haze": 1.2}]


def run_in_threads(jobs: list, repeat: int = 1) -> list:
    """Run each zero-argument job in its own thread (``repeat`` times, started together); results in order."""
    barrier = threading.Barrier(len(jobs))
    results: list = [None] * len(jobs)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            barrier.wait()
            results[index] = [jobs[index]() for _ in range(repeat)]
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    if errors:
        raise errors[0]
    return results


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
def test_threads_get_their_single_threaded_outputs(own_backbone, random_bank, photo, fused):
    base_weights = {k: v.clone() for k, v in own_backbone.base_state_dict().items()}
    options = SamplerOptions(tile=64)  # several tiles per image: many chances to interleave
    compositions = [Composition(bank=random_bank, weights=w, fused=fused) for w in WEIGHT_SETS]

    def job(composition):
        return lambda: restore_batch(own_backbone, photo, [composition], options)

    expected = [job(c)() for c in compositions]
    assert not all(torch.equal(expected[0], e) for e in expected[1:]), "the weight sets must differ in output"
    results = run_in_threads([job(c) for c in compositions], repeat=3)
    for index, outputs in enumerate(results):
        for output in outputs:
            assert torch.equal(output, expected[index]), f"thread {index} got another thread's weights"
    after = own_backbone.base_state_dict()
    assert all(torch.equal(base_weights[k], after[k]) for k in base_weights), "the shared backbone was changed"
    assert torch.equal(job(compositions[0])(), expected[0])


def test_concurrent_attach_of_one_bank(own_backbone, random_bank):
    banks = [open_bank(random_bank.root) for _ in range(4)]  # separate objects, as separate callers make
    results = run_in_threads([lambda bank=bank: bank.attach(own_backbone) for bank in banks])
    names = [result[0] for result in results]
    assert all(n == names[0] for n in names) and set(names[0]) == {"noise", "haze", "jpeg"}
    assert set(names[0].values()) <= set(own_backbone.adapter_names())
    assert set(names[0].values()) <= set(own_backbone.adapter_root.peft_config)


def test_lora_file_replaced_on_disk_is_reloaded(own_backbone, random_bank, photo):
    composition = Composition(bank=random_bank, weights={"noise": 1.0})
    before = restore_batch(own_backbone, photo, [composition])
    path = random_bank.root / random_bank.manifest.lora("noise").file
    state = {k: v * 3 for k, v in load_file(str(path)).items()}
    replacement = path.with_name("replacement.safetensors")
    save_file(state, str(replacement))
    os.replace(replacement, path)  # how a copy tool or a re-export replaces a file: new inode
    reopened = open_bank(random_bank.root)  # the same bank, opened again by the next call
    after = restore_batch(own_backbone, photo, [Composition(bank=reopened, weights={"noise": 1.0})])
    assert not torch.equal(before, after), "the backbone kept the old LoRA weights"
    fresh = copy.deepcopy(own_backbone)
    for adapter in list(fresh.adapter_names()):  # a backbone that only ever saw the new file
        for layer in fresh.lora_layers():
            if adapter in layer.lora_A:
                layer.delete_adapter(adapter)
        fresh.adapter_root.peft_config.pop(adapter, None)
    fresh.__dict__.pop("_uir_lora_sources", None)
    assert torch.equal(after, restore_batch(fresh, photo, [Composition(bank=reopened, weights={"noise": 1.0})]))
