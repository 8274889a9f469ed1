"""Synthetic degradations for training and evaluating universal image restoration.

``degrade(image, kind, generator=..., severity=...)`` applies one kind or a mixture (in physical
order) to float images in [0, 1]; every random parameter comes from the given generator.
"""

from .kinds import CANONICAL_ORDER, DEGRADATION_INFO, KINDS, SAME_DAMAGE, same_damage
from .registry import canonical_kinds, compatible, degrade, sample_mixture

__all__ = ["CANONICAL_ORDER", "DEGRADATION_INFO", "KINDS", "SAME_DAMAGE", "canonical_kinds", "compatible", "degrade",
           "same_damage", "sample_mixture"]
