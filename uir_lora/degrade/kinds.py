"""Degradation kind names and their canonical application order.

Kept free of heavy imports so that other modules (and the independent ``degrade_alt``
implementation) can share the names without sharing any synthesis code.
"""

from __future__ import annotations

KINDS: tuple[str, ...] = (
    "noise",
    "poisson_noise",
    "motion_blur",
    "defocus_blur",
    "jpeg",
    "low_light",
    "haze",
    "rain",
    "snow",
    "low_resolution",
    "raindrop",
    "color_cast",
)

# Kinds whose LoRAs undo the same damage: a presence router's heads split one such damage between them
# (each saw the other's examples as negatives), so they share one top-K place (RouterDefaults.alternatives).
SAME_DAMAGE: tuple[tuple[str, ...], ...] = (("noise", "poisson_noise"),)


def same_damage(named: str, kind: str) -> bool:
    """Whether LoRA ``named`` undoes damage ``kind``: the same name, or members of one ``SAME_DAMAGE`` group
    (lenient routing scores count these as right)."""
    return named == kind or any({named, kind} <= set(group) for group in SAME_DAMAGE)


# Physical image-formation order: scene/atmosphere, then lens (drops, blur), then sampling,
# then sensor noise, then compression. Mixtures are always applied in this order.
CANONICAL_ORDER: tuple[str, ...] = (
    "haze",
    "low_light",
    "color_cast",
    "rain",
    "snow",
    "raindrop",
    "motion_blur",
    "defocus_blur",
    "low_resolution",
    "noise",
    "poisson_noise",
    "jpeg",
)

DEGRADATION_INFO: dict[str, str] = {
    "noise": "Gaussian sensor noise, sigma 5-50 (of 255); i.i.d., channel-correlated or spatially-correlated",
    "poisson_noise": "Poisson-Gaussian noise: shot noise, peak 100-5 photons per unit, + read noise 1-10/255",
    "motion_blur": "Motion blur, length 5-25 px: straight-line kernel or random-walk camera-shake trajectory",
    "defocus_blur": "Defocus blur: disk radius 1.5-6 px, Gaussian sigma 1-4 px, or soft disk",
    "jpeg": "JPEG compression artefacts, quality 60-10, single or double compression",
    "low_light": "Under-exposure: gamma 1.5-3.5 times scale 0.35-0.05, with dark noise and optional tint; "
                 "a third as a camera develops it (1-5 stops, part won back, a tone-mapping shoulder)",
    "haze": "Atmospheric haze I = J t + A (1 - t), t = exp(-beta d), beta 0.5-3, airlight 0.7-1.0",
    "rain": "Rain streaks: 1-3 layers of near-vertical motion-blurred streaks plus a light veil",
    "snow": "Snow: small flakes and large soft blobs, optionally wind-blurred, plus a white veil",
    "low_resolution": "Low resolution: downscale x2-x4 (bicubic/bilinear/area) then upscale back",
    "raindrop": "Adherent lens raindrops: soft ellipses showing a blurred, inverted, refracted view",
    "color_cast": "Colour cast: white-balance gains 0.6-1.4, optional contrast fade or sepia mix",
}
