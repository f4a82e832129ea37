"""Every account page renders, for visitors and for signed-in users."""

from __future__ import annotations

import pytest
from django.contrib.auth.tokens import default_token_generator
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from accounts import tokens

PUBLIC_PAGES = [
    "home",
    "accounts:login",
    "accounts:signup",
    "accounts:logout",
    "accounts:password_reset",
    "accounts:password_reset_done",
    "accounts:password_reset_complete",
]
SIGNED_IN_PAGES = [
    "home",
    "accounts:logout",
    "accounts:settings_profile",
    "accounts:settings_email",
    "accounts:settings_password",
    "accounts:settings_delete",
    "accounts:password_reset",
    "accounts:password_reset_done",
    "accounts:password_reset_complete",
]


@pytest.mark.parametrize("name", PUBLIC_PAGES)
def test_pages_render_for_visitors(client, db, name):
    response = client.get(reverse(name))

    assert response.status_code == 200
    assert b'<main id="main"' in response.content


@pytest.mark.parametrize("name", SIGNED_IN_PAGES)
def test_pages_render_for_signed_in_users(client, user, name):
    client.force_login(user)

    response = client.get(reverse(name))

    assert response.status_code == 200
    assert user.email.encode() in response.content


def test_the_landing_page_tells_visitors_what_djinn_is(client, db):
    response = client.get(reverse("home"))

    assert b"A private ChatGPT" in response.content
    assert reverse("accounts:signup").encode() in response.content


def test_the_verification_required_page_renders_for_unverified_users(client, settings, unverified_user):
    settings.DJINN_REQUIRE_EMAIL_VERIFICATION = True
    client.force_login(unverified_user)

    response = client.get(reverse("accounts:verification_required"))

    assert response.status_code == 200


def test_the_link_failure_pages_render(client, unverified_user):
    client.force_login(unverified_user)

    verify = client.get(reverse("accounts:verify_email", kwargs={"token": "x"}))
    change = client.get(reverse("accounts:email_change_confirm", kwargs={"token": "x"}))

    assert verify.status_code == change.status_code == 400


def test_the_reset_confirm_page_renders_for_a_good_link(client, user):
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    token = default_token_generator.make_token(user)

    response = client.get(reverse("accounts:password_reset_confirm", args=[uid, token]), follow=True)

    assert response.status_code == 200
    assert b"Choose a new password" in response.content


def test_link_lifetimes_are_said_in_words(settings):
    settings.PASSWORD_RESET_TIMEOUT = 60 * 60 * 24
    day = tokens.link_lifetime()
    settings.PASSWORD_RESET_TIMEOUT = 60 * 30
    half_hour = tokens.link_lifetime()

    assert (day, half_hour) == ("24 hours", "30 minutes")
