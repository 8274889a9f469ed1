"""Property tests (hypothesis): the router's normalisation, the composer, and user-facing values.

Small example counts and tiny images keep this fast on two cores.
"""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from uir_lora.compose.composer import MAX_WEIGHT, Composition, composed
from uir_lora.errors import InputError, check_int, check_range
from uir_lora.pipeline import apply_strength, estimate, parse_weights, restore
from uir_lora.router.router import normalise_top_k
from uir_lora.sampler.restore import SamplerOptions

FAST = settings(max_examples=25, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
NAMES = ("noise", "haze", "jpeg")

# any value a workflow JSON or a careless caller could hand over
ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8), st.lists(st.integers(), max_size=2),
)


@pytest.fixture(scope="module")
def bank(tmp_path_factory, embedded_backbone, encoder_dim):
    from uir_lora.bank.store import open_bank
    from uir_lora.lab.testing.banks import make_random_bank

    return open_bank(make_random_bank(tmp_path_factory.mktemp("bank"), embedded_backbone, dim=encoder_dim,
                                      conditioning={"sigma": 25 / 255}))


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.rand(1, 3, 16, 20, generator=torch.Generator().manual_seed(0))


# -- router: normalise_top_k --------------------------------------------------------------------
# distinct similarities (integers / 1000 are exact enough in float32), so "the top K" is unambiguous
SIMILARITIES = st.lists(st.integers(-1000, 1000), min_size=1, max_size=8, unique=True).map(
    lambda xs: torch.tensor(xs, dtype=torch.float32) / 1000)


@FAST
@given(sims=SIMILARITIES, top_k=st.integers(1, 10), temperature=st.floats(1e-3, 10.0),
       normalisation=st.sampled_from(("softmax", "sum")), seed=st.integers(0, 1000))
def test_normalise_top_k(sims, top_k, temperature, normalisation, seed):
    weights = normalise_top_k(sims, top_k, temperature, normalisation)
    k = min(top_k, sims.numel())
    kept = set(sims.topk(k).indices.tolist())
    assert weights.shape == sims.shape and (weights >= 0).all()
    assert weights.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert all(weights[i] == 0 for i in range(sims.numel()) if i not in kept)  # zero outside the top K
    # a permutation of the LoRAs permutes the weights, nothing else
    order = torch.randperm(sims.numel(), generator=torch.Generator().manual_seed(seed))
    assert torch.allclose(normalise_top_k(sims[order], top_k, temperature, normalisation), weights[order], atol=1e-6)
    # rows of a batch are independent
    batch = normalise_top_k(torch.stack([sims, sims.flip(0)]), top_k, temperature, normalisation)
    assert torch.allclose(batch[0], weights, atol=1e-6) and torch.allclose(batch[1], weights.flip(0), atol=1e-6)


@FAST
@given(sims=SIMILARITIES, temperature=st.floats(1e-3, 10.0))
def test_softmax_prefers_higher_similarity(sims, temperature):
    weights = normalise_top_k(sims, sims.numel(), temperature, "softmax")
    order = sims.argsort()
    assert (weights[order].diff() >= -1e-7).all()  # monotone in similarity


# -- composer -----------------------------------------------------------------------------------
WEIGHTS = st.dictionaries(st.sampled_from(NAMES), st.floats(-MAX_WEIGHT, MAX_WEIGHT, allow_nan=False), max_size=3)


def base_weights(backbone) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in backbone.base_state_dict().items()}


def is_base_state(backbone, before: dict[str, torch.Tensor]) -> bool:
    after = backbone.base_state_dict()
    return all(torch.equal(before[k], after[k]) for k in before) and all(
        not layer.lora_A or layer.disable_adapters for layer in backbone.lora_layers())


@settings(FAST, max_examples=15)
@given(weights=WEIGHTS, fail=st.booleans())
def test_composer_fused_matches_unfused_and_restores_base(embedded_backbone, bank, image, weights, fail):
    bank.attach(embedded_backbone)
    before = base_weights(embedded_backbone)
    outputs = []
    for fused in (True, False):
        try:
            with composed(embedded_backbone, Composition(bank, weights, fused=fused)) as backbone:
                outputs.append(backbone.restore_step(image, {"sigma": 0.05}))
                if fail:
                    raise RuntimeError("failure inside the composed block")
        except RuntimeError:
            assert fail
        assert is_base_state(embedded_backbone, before)  # bit-exact, after success or error
    scale = 1 + sum(abs(w) for w in weights.values())
    assert (outputs[0] - outputs[1]).abs().max() < 1e-4 * scale


@FAST
@given(name=st.sampled_from(NAMES), value=st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).filter(lambda v: not abs(v) <= MAX_WEIGHT),
    st.text(max_size=3), st.booleans(), st.none()))
def test_composer_rejects_bad_weights(embedded_backbone, bank, name, value):
    bank.attach(embedded_backbone)
    before = base_weights(embedded_backbone)
    with pytest.raises(InputError, match=name):
        with composed(embedded_backbone, Composition(bank, {name: value})):
            pytest.fail("the composition should have been refused")
    assert is_base_state(embedded_backbone, before)


# -- user-facing values: accepted, or a clear InputError (never another exception type) ----------
@FAST
@given(text=st.text(max_size=40) | ANY_VALUE | st.lists(
    st.tuples(st.sampled_from(NAMES + ("", " x", "=")), st.sampled_from(("=", ":", "")),
              st.sampled_from(("0.5", "-1", "nan", "inf", "1e999", "abc", "", "0x1", "1_0"))),
    max_size=4).map(lambda items: ",".join(n + s + v for n, s, v in items)))
def test_parse_weights(text):
    try:
        weights = parse_weights(text)
    except InputError as error:
        assert "noise=0.7,jpeg=0.3" in str(error)
        return
    assert all(isinstance(k, str) and isinstance(v, float) for k, v in weights.items())


@FAST
@given(value=ANY_VALUE, low=st.integers(-5, 5), span=st.integers(0, 10))
def test_check_range_and_check_int(value, low, span):
    high = low + span
    for check in (check_range, check_int):
        try:
            number = check("field", value, low, high)
        except InputError as error:
            assert "field" in str(error) and f"{low}" in str(error)
            continue
        assert low <= number <= high and math.isfinite(number)
        if check is check_int:
            assert isinstance(number, int) and not isinstance(value, bool)


@FAST
@given(tile=ANY_VALUE, steps=ANY_VALUE, seed=ANY_VALUE)
def test_sampler_options(embedded_backbone, tile, steps, seed):
    options = SamplerOptions(tile=tile, steps=steps, seed=seed)
    try:
        options.validate(embedded_backbone)
    except InputError as error:
        assert any(field in str(error) for field in ("tile", "steps", "seed"))
        return
    assert all(isinstance(v, int) for v in (options.tile, options.steps, options.seed))


@FAST
@given(strength=ANY_VALUE)
def test_strength(image, strength):
    try:
        out = apply_strength(image, 1 - image, strength)
    except InputError as error:
        assert "strength" in str(error)
        return
    assert out.shape == image.shape and torch.isfinite(out).all()


def one_bad(data, valid: dict, bad: str | None) -> dict:
    """Valid values for every field, except ``bad`` which gets any value at all."""
    values = {name: data.draw(strategy, label=name) for name, strategy in valid.items()}
    if bad is not None:
        values[bad] = data.draw(ANY_VALUE, label=f"bad {bad}")
    return values


@settings(FAST, max_examples=12)
@given(data=st.data(), bad=st.sampled_from((None, "top_k", "temperature")))
def test_router_values(bank, image, data, bad):
    values = one_bad(data, {"top_k": st.integers(1, len(NAMES)), "temperature": st.floats(1e-4, 100.0)}, bad)
    try:
        (result,) = estimate(bank, image, **values)
    except InputError as error:
        assert bad is not None and bad in str(error)
        event("refused")
        return
    event("routed")
    top_k = bank.manifest.router.top_k if values["top_k"] is None else values["top_k"]  # None: the default
    assert 1 <= len(result.weights) <= top_k
    assert sum(result.weights.values()) == pytest.approx(1.0, abs=1e-5)


@settings(FAST, max_examples=12)
@given(data=st.data(), bad=st.sampled_from((None, None, "tile", "strength", "seed")),
       weights=st.dictionaries(st.sampled_from(NAMES), st.floats(-2, 2), min_size=1, max_size=3),
       fused=st.booleans())
def test_pipeline_values(embedded_backbone, bank, image, data, bad, weights, fused):
    valid = {"tile": st.integers(64, 160), "strength": st.floats(0.0, 1.0), "seed": st.integers(0, 2**63 - 1)}
    values = one_bad(data, valid, bad)
    options = {"tile": values["tile"], "seed": values["seed"]}
    before = base_weights(embedded_backbone)
    try:
        out, _ = restore(image, embedded_backbone, bank, manual=weights, mode="manual", fused=fused,
                         strength=values["strength"], options=SamplerOptions(**options))
    except InputError as error:
        assert bad is not None and bad in str(error)
        event("refused")
    else:
        event("restored")
        assert out.shape == image.shape and torch.isfinite(out).all()
        again, _ = restore(image, embedded_backbone, bank, manual=weights, mode="manual", fused=fused,
                           strength=values["strength"], options=SamplerOptions(**options))
        assert torch.equal(out, again)  # same values, same output
    assert is_base_state(embedded_backbone, before)


# -- node values, through the pack imported against fakes of ComfyUI (conftest's pack fixture) ------
@pytest.fixture(scope="module")
def node_env(nodes, comfy_fakes, tmp_path_factory, bank):
    models_dir = tmp_path_factory.mktemp("models")
    comfy_fakes.use_models_dir(models_dir)
    shutil.copytree(bank.root, models_dir / "uir_lora" / "tiny")
    found = nodes
    backbone = found["UIR_BackboneLoader"].execute("embedded-ffdnet (built in)", "cpu", "fp32")[0]
    return found, backbone, found["UIR_LoraBankLoader"].execute(backbone, "tiny")[0]


def refused_cleanly(error: Exception, field: str) -> bool:
    """A user error of the pack (its own copy of InputError) or degrade's ValueError, naming the field."""
    words = ("weight", "LoRA") if field == "weights" else (field,)
    return isinstance(error, ValueError) and any(word in str(error) for word in words)


@settings(FAST, max_examples=12)
@given(data=st.data(), bad=st.sampled_from((None, "tile", "strength", "seed", "weights", "top_k", "temperature")))
def test_node_values(node_env, image, data, bad):
    found, backbone, bank = node_env
    valid = {"tile": st.integers(64, 128), "strength": st.floats(0.0, 1.0), "seed": st.integers(0, 2**63 - 1),
             "weights": st.sampled_from(("noise=1", "haze=0.5,jpeg=0.5")), "top_k": st.integers(0, 3),
             "temperature": st.just(0.0) | st.floats(1e-4, 100.0)}  # 0 = the bank's default
    values = one_bad(data, valid, bad)
    comfy = image.movedim(1, -1)
    try:
        routing = found["UIR_DegradationEstimator"].execute(comfy, bank, values["top_k"], values["temperature"],
                                                            "bank default").args[0]
        mode = "manual" if values["weights"] and data.draw(st.booleans(), label="manual") else "bias"
        composition = found["UIR_LoraComposer"].execute(bank, mode, values["weights"], True, routing).args[0]
        (out,) = found["UIR_Restore"].execute(comfy, backbone, composition, values["strength"], values["tile"],
                                              values["seed"], False).args
    except Exception as error:  # noqa: BLE001 - the property is about the exception's type
        assert bad is not None and refused_cleanly(error, bad), repr(error)
        return
    assert out.shape == comfy.shape and torch.isfinite(out).all()


@settings(FAST, max_examples=15)
@given(data=st.data(), bad=st.sampled_from((None, "severity", "seed")))
def test_degrade_node_values(node_env, image, data, bad):
    values = one_bad(data, {"severity": st.floats(0.0, 1.0), "seed": st.integers(0, 2**63 - 1)}, bad)
    try:
        (out,) = node_env[0]["UIR_SyntheticDegrade"].execute(image.movedim(1, -1), "noise", "jpeg", **values).args
    except Exception as error:  # noqa: BLE001
        assert bad is not None and refused_cleanly(error, bad), repr(error)
        return
    assert out.shape == (1, *image.shape[2:], 3) and torch.isfinite(out).all()
