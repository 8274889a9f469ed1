"""Shared fixtures. Tests run offline (pytest-socket) on the CPU with one thread."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def embedded_backbone():
    """The real embedded FFDNet backbone from lora_bank/backbones (3.4 MB, loads in ms)."""
    from uir_lora.pipeline import default_backbone

    return default_backbone()


@pytest.fixture(scope="session")
def encoder_dim() -> int:
    from uir_lora.router.encoder import DegradationEncoder

    return DegradationEncoder().dim


@pytest.fixture()
def random_bank(tmp_path, embedded_backbone, encoder_dim):
    """A bank of three random LoRAs (noise, haze, jpeg) on the embedded backbone, routable."""
    from uir_lora.bank.store import open_bank
    from uir_lora.lab.testing.banks import make_random_bank

    return open_bank(make_random_bank(tmp_path, embedded_backbone, dim=encoder_dim,
                                      conditioning={"sigma": 25 / 255}))


@pytest.fixture()
def photo() -> torch.Tensor:
    """A natural photo (scikit-image's astronaut, public domain) cropped to 96x128, [1,3,H,W]."""
    try:
        from skimage import data
    except ImportError:
        pytest.skip("scikit-image not installed")
    image = torch.from_numpy(data.astronaut()[100:196, 150:278].copy()).permute(2, 0, 1)[None].float() / 255
    return image
