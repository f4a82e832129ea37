"""Every settings page fits a 390 px phone: the section list scrolls sideways inside itself, the page does
not (issue 12, defect 2)."""

from __future__ import annotations

import pytest
from django.urls import reverse
from playwright.sync_api import Page

from tests.factories import UserFactory

pytestmark = [pytest.mark.browser]

PAGES = [
    "accounts:settings_profile",
    "accounts:settings_email",
    "accounts:settings_password",
    "accounts:settings_billing",
    "accounts:settings_api_keys",
    "conversations:settings_shared_links",
    "conversations:settings_export",
    "developers",
    "accounts:settings_delete",
]


def test_no_settings_page_scrolls_sideways_on_a_phone(page: Page, sign_in):
    sign_in(UserFactory())
    page.set_viewport_size({"width": 390, "height": 844})
    wider = []

    for name in PAGES:
        page.goto(reverse(name))
        if not page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"):
            wider.append(name)

    assert wider == []
