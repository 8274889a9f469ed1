"""``python -m uir_lora ...``: the runtime's command line (restore, estimate); ``uir-lora`` adds the lab's."""

import sys

from .cli import main

sys.exit(main())
