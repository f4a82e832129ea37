"""Suite-wide setup. Triton's interpreter must be chosen before any kernel module is imported.

The live-process fixtures (tiny model, Celery worker, web server) live in tests/live.py and are
registered here, so a single worker and a single server serve every directory of one session."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    # No GPU: every Triton kernel runs under the interpreter on CPU tensors (see shared notes).
    os.environ.setdefault("TRITON_INTERPRET", "1")

if os.environ.get("DJANGO_SETTINGS_MODULE"):
    # pytest-django sets this before conftests load; with `-p no:django` (engine-only runs: the engine needs
    # no Django) the live-process fixtures, which do, are left out.
    from tests.live import celery_worker, chat_model_path, live_server_url, llm_model  # noqa: F401


@pytest.fixture(autouse=True)
def _clean_cache(request: pytest.FixtureRequest):
    """Each Django test starts from an empty cache (rate-limit counters live there)."""
    django_fixtures = {"db", "transactional_db", "client", "settings"}
    uses_django = request.node.get_closest_marker("django_db") or django_fixtures & set(request.fixturenames)
    if uses_django:
        from django.core.cache import cache

        cache.delete_pattern("*")  # only keys under the test run's own KEY_PREFIX
    yield


@pytest.fixture(autouse=True)
def _plans(request: pytest.FixtureRequest):
    """The seeded plans exist in every database test (a transactional test's flush removes them), and users
    are on a default plan without limits, so that a test about something else is not refused by Free's
    limits. Tests about limits are marked ``plan_limits``: they get the seeded Free plan as the default."""
    marker = request.node.get_closest_marker("django_db")
    if marker is None:
        requested = {"db", "transactional_db"} & set(request.fixturenames)
        if not requested:
            yield
            return
        request.getfixturevalue(requested.pop())
    from accounts.billing import quotas
    from tests.billing import plans_seed, unlimited_default

    plans_seed()
    if request.node.get_closest_marker("plan_limits") is None:
        unlimited_default()
    else:
        quotas.limits_forget()  # limits this process kept from an earlier test
    yield
