"""A user signs in, chooses Deutsch in Settings, and from then on sees Djinn in German: the pages, the
messages, and what scripts say through the JavaScript catalog."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import screenshot
from tests.factories import DEFAULT_PASSWORD, UserFactory

pytestmark = [pytest.mark.browser]


def test_a_user_signs_in_chooses_deutsch_in_settings_and_sees_djinn_in_german(page: Page):
    UserFactory(email="ada@example.com", display_name="Ada")
    page.goto("/accounts/login/?next=/accounts/settings/")
    page.get_by_label("E-mail address").fill("ada@example.com")
    page.get_by_label("Password").fill(DEFAULT_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Settings")).to_be_visible()
    assert page.evaluate("gettext('Copied')") == "Copied"

    page.get_by_label("Language").select_option(label="Deutsch")
    page.get_by_role("button", name="Save").click()

    expect(page.locator("html")).to_have_attribute("lang", "de")
    expect(page.get_by_role("heading", name="Einstellungen")).to_be_visible()
    expect(page.get_by_text("Profil gespeichert.")).to_be_visible()
    expect(page.get_by_label("Sprache")).to_have_value("de")
    assert page.evaluate("gettext('Copied')") == "Kopiert"  # the catalog of the new language
    screenshot(page, "settings-in-german")
    page.get_by_role("link", name="Tarif und Nutzung").click()
    expect(page.get_by_role("heading", name="Tarif und Nutzung")).to_be_visible()
    expect(page.get_by_text("Tokens in diesem Monat")).to_be_visible()
    screenshot(page, "billing-in-german")
