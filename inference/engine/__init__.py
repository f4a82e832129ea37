"""Djinn's LLM engine: plain PyTorch (+ Triton on CUDA). Imports nothing from Django."""
