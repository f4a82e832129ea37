"""One entry point for checkpoints: a .gguf file or a Hugging Face folder -> (ModelConfig, weights)."""

from __future__ import annotations

from pathlib import Path

from .config import ModelConfig
from .errors import ModelLoadError
from .gguf_loader import load_gguf
from .hf_loader import load_hf
from .linear import Weight


def load_checkpoint(path: Path) -> tuple[ModelConfig, dict[str, Weight]]:
    """Weights are named as in a Hugging Face Llama checkpoint (``model.layers.0.self_attn.q_proj.weight``)."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"Model not found: {path} (give a .gguf file or a Hugging Face checkpoint folder).")
    if path.is_dir():
        return load_hf(path)
    if path.suffix.lower() == ".gguf":
        return load_gguf(path)
    raise ModelLoadError(f"{path} is neither a .gguf file nor a Hugging Face checkpoint folder.")
