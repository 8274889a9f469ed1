"""Packaging glue that pyproject.toml cannot express: ship lora_bank/ inside the wheel.

In a source checkout or ComfyUI's custom_nodes the engine reads <pack>/lora_bank directly; a wheel
install maps that folder to the package ``uir_lora.bundled_bank`` (see uir_lora/paths.py).
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["uir_lora", "uir_lora.*"]) + ["uir_lora.bundled_bank"],
    package_dir={"uir_lora.bundled_bank": "lora_bank"},
    package_data={"uir_lora.bundled_bank": ["**/*.json", "**/*.safetensors", "**/*.txt", "**/SHA256SUMS"]},
)
