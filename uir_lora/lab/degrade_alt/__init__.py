"""Independent second implementation of the degradation kinds, for generalisation tests.

Models trained on ``uir_lora.degrade`` are evaluated on images from here: same kind names and call
signature, but different kernels, streak/flake/haze models, parameter ranges and libraries
(numpy, scipy, PIL, scikit-image). Only the list of kind names is shared.
"""

from uir_lora.degrade.kinds import KINDS

from .api import degrade

__all__ = ["KINDS", "degrade"]
