"""tools/average_loras.py: a kind's LoRA as the weighted average of two, at its rank, written as a new bank."""

from __future__ import annotations

import pytest
import torch

from uir_lora.bank.manifest import read_manifest
from uir_lora.bank.store import read_lora_file
from uir_lora.lab.testing.banks import make_random_bank


def _state(seed: int, rank: int = 4, outputs: int = 6) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"conv.lora_A.weight": torch.randn(rank, 5, 3, 3, generator=generator),
            "conv.lora_B.weight": torch.randn(outputs, rank, 1, 1, generator=generator)}


def _change(state: dict[str, torch.Tensor]) -> torch.Tensor:
    return state["conv.lora_B.weight"].flatten(1) @ state["conv.lora_A.weight"].flatten(1)


def test_the_average_of_two_lora_changes_is_their_weighted_sum_where_the_rank_holds_it(tool) -> None:
    average = tool("average_loras").average_lora_states
    a = _state(0)
    tripled = {**a, "conv.lora_B.weight": a["conv.lora_B.weight"] * 3}  # the same span: nothing to cut
    state, kept = average(a, tripled, 0.5)
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in a.items()}
    assert torch.allclose(_change(state), 2 * _change(a), atol=1e-4)
    assert kept == pytest.approx(1.0)
    only_a, _ = average(a, _state(1), 1.0)
    assert torch.allclose(_change(only_a), _change(a), atol=1e-4)


def test_an_average_beyond_the_rank_keeps_its_largest_part(tool) -> None:
    a, b = _state(0), _state(1)
    state, kept = tool("average_loras").average_lora_states(a, b, 0.5)
    full = 0.5 * (_change(a) + _change(b)).double()
    singular = torch.linalg.svdvals(full)
    best = singular[:4]  # the rank-4 part that SVD keeps is the closest rank-4 matrix
    error = torch.linalg.matrix_norm(full - _change(state).double())
    assert float(error) == pytest.approx(float(singular[4:].square().sum().sqrt()), rel=1e-3)
    assert kept == pytest.approx(float(best.square().sum() / singular.square().sum()), rel=1e-6)
    assert kept < 1.0


def test_a_layer_with_fewer_outputs_than_the_rank_is_averaged_exactly(tool) -> None:
    a, b = _state(0, rank=8, outputs=3), _state(1, rank=8, outputs=3)
    state, kept = tool("average_loras").average_lora_states(a, b, 0.3)
    assert torch.allclose(_change(state), 0.3 * _change(a) + 0.7 * _change(b), atol=1e-4)
    assert kept == pytest.approx(1.0)


def test_loras_of_other_shapes_are_refused(tool) -> None:
    with pytest.raises(ValueError, match="must share rank and targets"):
        tool("average_loras").average_lora_states(_state(0, rank=4), _state(1, rank=2), 0.5)


def test_the_command_writes_a_new_bank_and_leaves_its_sources_alone(tmp_path, embedded_backbone, capsys, tool,
                                                                    tree_digest) -> None:
    bank_a = make_random_bank(tmp_path / "a", embedded_backbone, seed=0)
    bank_b = make_random_bank(tmp_path / "b", embedded_backbone, seed=1)
    average = tool("average_loras")
    before = tree_digest(bank_a), tree_digest(bank_b)
    out = tmp_path / "averaged"
    assert average.main([str(bank_a), str(bank_b), "haze", "--share-of-a", "0.25", "--out", str(out)]) == 0
    assert (tree_digest(bank_a), tree_digest(bank_b)) == before
    manifest = read_manifest(out)
    entry = manifest.lora("haze")
    assert entry.provenance["recipe"] == "average" and entry.provenance["share_of_a"] == 0.25
    sources = read_manifest(bank_a).lora("haze").provenance, read_manifest(bank_b).lora("haze").provenance
    assert entry.provenance["steps"] == sum(int(p.get("steps", 0)) for p in sources)
    assert entry.provenance["a"]["provenance"] == sources[0] and entry.provenance["b"]["provenance"] == sources[1]
    written = read_lora_file(out / entry.file)
    expected, _ = average.average_lora_states(read_lora_file(bank_a / entry.file),
                                              read_lora_file(bank_b / entry.file), 0.25)
    assert all(torch.equal(written[k], expected[k]) for k in expected)
    unchanged = tree_digest(out)
    assert {k: v for k, v in unchanged.items() if k not in {entry.file, "manifest.json"}} == \
        {k: v for k, v in before[1].items() if k not in {entry.file, "manifest.json"}}
    with pytest.raises(SystemExit):
        average.main([str(bank_a), str(bank_b), "haze", "--out", str(out)])
    assert "exists; choose a new folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        average.main([str(bank_a), str(bank_b), "rain", "--out", str(tmp_path / "other")])
    assert "'rain' is not in both banks" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()
