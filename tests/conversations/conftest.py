"""The fixtures conversation tests use (``chat_model_path``, ``llm_model``, ``celery_worker``) and ``wait_for``
live in tests/live.py, registered for the whole suite by tests/conftest.py, so one worker serves every
directory. (Importing the fixtures into a conftest would register a second copy, with its own worker.)"""

from __future__ import annotations

from tests.live import wait_for  # noqa: F401  (imported from here by older tests)
