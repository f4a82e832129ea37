"""The fixtures conversation tests use (``chat_model_path``, ``llm_model``, ``celery_worker``) and ``wait_for``
moved to tests/live.py, registered for the whole suite by tests/conftest.py.

The names can still be imported from here, but importing the fixtures into another conftest registers a
second copy there (a second worker for that directory): rely on the root conftest instead.
"""

from __future__ import annotations

from typing import Any

import tests.live
from tests.live import wait_for  # noqa: F401  (imported from here by older tests)

_MOVED = {"chat_model_path", "llm_model", "celery_worker"}


def __getattr__(name: str) -> Any:
    # Resolved lazily, so pytest (which registers what dir() lists) does not register these a second time.
    if name in _MOVED:
        return getattr(tests.live, name)
    raise AttributeError(name)
