"""Djinn's LLM engine: plain PyTorch (+ Triton on CUDA). Imports nothing from Django."""

from __future__ import annotations

from .engine import Engine, RequestOutput, Usage
from .errors import EngineError, InvalidRequestError, ModelLoadError, PromptTooLongError
from .sampling import SamplingParams, TokenLogprob

__all__ = [
    "Engine",
    "EngineError",
    "InvalidRequestError",
    "ModelLoadError",
    "PromptTooLongError",
    "RequestOutput",
    "SamplingParams",
    "TokenLogprob",
    "Usage",
]
