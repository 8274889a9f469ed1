"""``python -m uir_lora.lab ...`` is the full ``uir-lora`` command line."""

import sys

from .cli import main

sys.exit(main())
