"""The Content-Security-Policy (only Djinn's own scripts and styles, nothing inline) holds on every kind of
page: each page is opened in Chromium, and the ``page`` fixture fails the test on any violation it reports."""

from __future__ import annotations

import pytest

from tests.factories import UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("llm_model")]

PAGES = [
    "/",
    "/accounts/settings/",
    "/accounts/settings/api-keys/",
    "/settings/shared-links/",
    "/settings/export/",
    "/developers/",
    "/admin/",
    "/admin/accounts/user/",
    "/admin/conversations/conversation/",
]


def test_every_page_runs_under_the_policy_with_nothing_blocked(page, sign_in):
    response = page.goto("/accounts/login/")
    policy = response.headers["content-security-policy"]
    staff = UserFactory(is_staff=True, is_superuser=True)
    sign_in(staff)

    for path in PAGES:
        page.goto(path)
        page.wait_for_load_state("networkidle")

    page.goto("/api/docs/")
    page.wait_for_selector(".swagger-ui .info")  # Swagger UI started: its script is a file, not inline
    assert "script-src 'self'" in policy and "style-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    # The API docs alone allow inline styles (Swagger UI draws with them); never inline scripts.
    docs_policy = page.request.get("/api/docs/").headers["content-security-policy"]
    assert "script-src 'self';" in docs_policy + ";" and "'unsafe-inline'" in docs_policy.split("style-src")[1]
