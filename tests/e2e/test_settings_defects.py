"""Settings and admin defects from issue 12: a reload after creating an API key creates no second key and
revoking asks first (defect 5); a too-short new password is flagged under the field it is about (defect 12);
the admin's model list fits a 1280 px screen (defect 13)."""

from __future__ import annotations

import pytest
from django.contrib.auth.tokens import default_token_generator
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from playwright.sync_api import Page, expect

from accounts.models import ApiKey
from inference.models import LLMModel
from tests.e2e.conftest import screenshot
from tests.factories import UserFactory

pytestmark = [pytest.mark.browser]


def test_reloading_after_creating_a_key_creates_no_second_one_and_revoking_asks_first(page: Page, sign_in):
    user = UserFactory()
    sign_in(user)

    page.goto("/accounts/settings/api-keys/")
    page.get_by_label("Name").fill("Laptop script")
    page.get_by_role("button", name="Create a key").click()
    expect(page.locator("#new-api-key")).to_contain_text("djn_")
    page.reload()

    expect(page.locator("#new-api-key")).to_have_count(0)  # shown once
    assert ApiKey.objects.filter(user=user).count() == 1
    page.get_by_role("link", name="Revoke Laptop script").click()
    expect(page.get_by_role("heading", name="Revoke “Laptop script”?")).to_be_visible()
    screenshot(page, "api-key-revoke-confirm")
    page.get_by_role("link", name="Keep it").click()
    assert ApiKey.objects.get(user=user).revoked_at is None
    page.get_by_role("link", name="Revoke Laptop script").click()
    page.get_by_role("button", name="Revoke this key").click()
    expect(page.get_by_text("revoked. Requests that use it now fail.")).to_be_visible()
    assert ApiKey.objects.get(user=user).revoked_at is not None


def test_a_too_short_new_password_is_flagged_under_the_new_password_field(page: Page, sign_in):
    user = UserFactory()
    uid, token = urlsafe_base64_encode(force_bytes(user.pk)), default_token_generator.make_token(user)
    link = f"/accounts/password/reset/{uid}/{token}/"

    page.goto(link)
    page.get_by_label("New password", exact=True).fill("x7!k")
    page.get_by_label("Confirm new password").fill("x7!k")
    page.get_by_role("button", name="Save the new password").click()

    new_field = page.locator(".field", has=page.get_by_label("New password", exact=True))
    confirm_field = page.locator(".field", has=page.get_by_label("Confirm new password"))
    expect(new_field.locator(".field-errors")).to_contain_text("This password is too short")
    expect(confirm_field.locator(".field-errors")).to_have_count(0)
    screenshot(page, "password-reset-short")


def test_every_admin_page_fits_a_1280_px_screen(page: Page, sign_in):
    from django.apps import apps
    from django.contrib import admin
    from django.urls import reverse

    from tests.conversations.factories import ConversationFactory, add_exchange

    LLMModel.objects.create(
        name="a-model-with-a-rather-long-name-q4",
        display_name="A model with a rather long display name for the picker",
        source="/srv/models/organisation/some-very-long-directory-name/and-another/model-file-name-q4_k_m.gguf",
        context_length=8192,
    )
    add_exchange(ConversationFactory(title="A conversation with a title long enough to wrap in a narrow column"))
    sign_in(UserFactory(is_staff=True, is_superuser=True))
    pages = ["/admin/", "/admin/analytics/"] + [
        reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        for model in apps.get_models()
        if admin.site.is_registered(model)
    ]

    too_wide = {}
    for url in pages:
        page.goto(url)
        # Neither the page nor a list's table (which scrolls inside its box, hiding its last columns) overflows.
        widths = page.evaluate(
            """() => {
                const results = document.querySelector('.results');
                return [document.documentElement.scrollWidth, innerWidth,
                        results ? results.scrollWidth : 0, results ? results.clientWidth : 0];
            }"""
        )
        if widths[0] > widths[1] or widths[2] > widths[3]:
            too_wide[url] = widths
            screenshot(page, "admin-too-wide-" + url.strip("/").replace("/", "-"))
    page.goto("/admin/inference/llmmodel/")
    screenshot(page, "admin-model-list-1280")
    assert too_wide == {}, too_wide
