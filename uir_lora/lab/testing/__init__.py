"""Helpers for tests and demos: tiny banks with random (untrained) LoRAs. Never used at run time."""
