"""Arguments: one weight per LoRA, numbers only in ASCII digits, router options checked even when unused."""

from __future__ import annotations

import pytest
from PIL import Image

from uir_lora.errors import InputError, parse_number
from uir_lora.lab import cli
from uir_lora.pipeline import parse_weights, restore


@pytest.mark.parametrize("text", ["noise=0.5,noise=0.7", "noise=0.5, noise =0.5"])
def test_duplicate_weight_names_refused(text):
    with pytest.raises(InputError, match="'noise' twice"):
        parse_weights(text)


@pytest.mark.parametrize("value", ["٣", "1_0", "０.5", "nan", "inf", "-infinity", "0x1", "1e", "", " ", "²"])
def test_weights_only_in_ascii_digits(value):
    with pytest.raises(InputError, match="digits 0-9"):
        parse_weights(f"noise={value}")


@pytest.mark.parametrize("text, expected", [("noise=.5", 0.5), ("noise=-1.", -1.0), ("noise=+2e-1", 0.2),
                                            (" noise = 0.7 , jpeg=1 ", None)])
def test_plain_numbers_are_read(text, expected):
    weights = parse_weights(text)
    assert weights["noise"] == pytest.approx(expected if expected is not None else 0.7)


@pytest.mark.parametrize("text, whole", [("3", True), ("-3", True), ("2.5", False), ("1e3", False)])
def test_parse_number_accepts_plain_decimals(text, whole):
    assert parse_number("x", text, whole=whole) == (int(text) if whole else float(text))


@pytest.mark.parametrize("field, value", [("top_k", 0), ("top_k", 99), ("temperature", 0.0),
                                          ("temperature", float("nan")), ("window", 7), ("window", 10**6)])
def test_router_options_checked_when_manual_weights_make_them_unused(random_bank, embedded_backbone, photo,
                                                                     field, value):
    with pytest.raises(InputError, match=field):
        restore(photo, embedded_backbone, random_bank, manual={"noise": 1.0}, mode="manual", **{field: value})


@pytest.mark.parametrize("option, value", [("--top-k", "0"), ("--top-k", "٣"), ("--top-k", "1_0"),
                                           ("--temperature", "-1"), ("--temperature", "١"), ("--window", "3"),
                                           ("--tile", "5١2"), ("--strength", "0_5"), ("--max-pixels", "1_000")])
def test_cli_refuses_bad_numbers_even_when_unused(random_bank, tmp_path, capsys, option, value):
    work = tmp_path / "work"
    work.mkdir()
    Image.new("RGB", (24, 16)).save(work / "in.png")
    code = cli.main(["restore", str(work / "in.png"), "--bank", "tiny", "--bank-dir",
                      str(random_bank.root.parent), "--weights", "noise=1", f"{option}={value}"])
    err = capsys.readouterr().err
    assert code == 2 and "uir-lora: error:" in err and "Traceback" not in err
    assert option in err or option.lstrip("-").replace("-", "_") in err
    assert sorted(p.name for p in work.iterdir()) == ["in.png"]
