"""Sub-commands of ``uir-lora``; each module has ``register(subparsers)``."""
