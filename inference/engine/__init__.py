"""Djinn's LLM engine: plain PyTorch (+ Triton on CUDA). Imports nothing from Django.

This package is the engine's one door: the rest of Djinn imports only what is named here (checked by the
import contracts in .importlinter).
"""

from __future__ import annotations

from .engine import Engine, RequestOutput, Usage
from .errors import EngineError, InvalidRequestError, ModelLoadError, PromptTooLongError
from .paths import resolve_model_path
from .sampling import MAX_TOP_LOGPROBS, SAMPLING_RANGES, Range, SamplingParams, TokenLogprob
from .tokenizer import Tokenizer, load_tokenizer, tokenizer_from_gguf

__all__ = [
    "MAX_TOP_LOGPROBS",
    "SAMPLING_RANGES",
    "Engine",
    "EngineError",
    "InvalidRequestError",
    "ModelLoadError",
    "PromptTooLongError",
    "Range",
    "RequestOutput",
    "SamplingParams",
    "TokenLogprob",
    "Tokenizer",
    "Usage",
    "load_tokenizer",
    "resolve_model_path",
    "tokenizer_from_gguf",
]
