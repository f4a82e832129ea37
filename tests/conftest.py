"""Suite-wide setup. Triton's interpreter must be chosen before any kernel module is imported."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    # No GPU: every Triton kernel runs under the interpreter on CPU tensors (see shared notes).
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _clean_cache(request: pytest.FixtureRequest):
    """Each test starts with an empty Django cache (rate-limit counters live there)."""
    yield
    if "django_settings" in request.fixturenames or request.node.get_closest_marker("django_db"):
        from django.core.cache import cache

        cache.delete_pattern("*")
