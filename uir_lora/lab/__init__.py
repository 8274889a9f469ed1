"""The lab: how the shipped bank is made and measured.

Training LoRAs and the degradation-aware encoder, fitting and evaluating the router, the second
degradation implementation that checks the first, evaluation harnesses, test helpers, and the
sub-commands that drive them. The lab imports the runtime (``uir_lora``); the runtime never imports
the lab, so a ComfyUI install or a restore runs without any of this code.
"""
