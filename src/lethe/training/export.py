"""Transitional: the running TOFU job imports this path; the module is lethe.backends.gguf_lora."""
from lethe.backends.gguf_lora import export_lora_gguf  # noqa: F401
