"""The lab's sub-commands of ``uir-lora`` (bank, train-lora, train-router, eval, encoder); each has ``register``."""
