from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils.html import escape

from accounts import forms
from accounts.models import User
from tests.factories import UserFactory

GOOD_PASSWORD = "analytical-engine-1843"


def sign_up(client, **overrides: str):
    data = {"email": "ada@example.com", "display_name": "Ada", "password1": GOOD_PASSWORD, "password2": GOOD_PASSWORD}
    return client.post(reverse("accounts:signup"), {**data, **overrides})


def test_sign_up_creates_an_unverified_account_and_logs_it_in(client, outbox, committed, db):
    # when
    with committed():
        response = sign_up(client, email="  Ada@Example.COM ")

    # then
    user = User.objects.get()
    assert response.status_code == 302
    assert user.email == "ada@example.com"
    assert user.display_name == "Ada"
    assert user.email_verified_at is None
    assert client.session["_auth_user_id"] == str(user.pk)
    assert len(outbox) == 1


@pytest.mark.parametrize("typed", ["ada@example.com", "ADA@EXAMPLE.COM", "Ada@Example.com"])
def test_sign_up_with_a_taken_email_in_any_case_says_so(client, db, typed):
    # given
    UserFactory(email="ada@example.com")

    # when
    response = sign_up(client, email=typed)

    # then
    assert response.status_code == 200
    assert escape(forms.EMAIL_TAKEN) in response.content.decode()
    assert User.objects.count() == 1


def test_sign_up_with_a_malformed_email_says_so(client, db):
    response = sign_up(client, email="ada.example.com")

    assert response.status_code == 200
    assert escape(forms.EMAIL_INVALID) in response.content.decode()
    assert not User.objects.exists()


@pytest.mark.parametrize(
    ("weak", "message"),
    [
        ("12345678", "This password is too common."),
        ("x7!k", "This password is too short. It must contain at least 8 characters."),
        ("58203947612", "This password is entirely numeric."),
        ("ada.lovelace", "The password is too similar to the e-mail address."),
    ],
)
def test_sign_up_with_a_weak_password_says_why(client, db, weak, message):
    response = sign_up(client, email="ada.lovelace@example.com", password1=weak, password2=weak)

    assert response.status_code == 200
    assert escape(message) in response.content.decode()
    assert not User.objects.exists()


def test_sign_up_with_mismatched_passwords_says_so(client, db):
    response = sign_up(client, password2=GOOD_PASSWORD + "x")

    assert response.status_code == 200
    assert escape(forms.PASSWORD_MISMATCH) in response.content.decode()
    assert not User.objects.exists()


def test_sign_up_errors_are_tied_to_their_fields_for_screen_readers(client, db):
    response = sign_up(client, email="not an address")

    html = response.content.decode()
    assert 'aria-invalid="true"' in html
    assert 'aria-describedby="id_email_error"' in html
    assert 'id="id_email_error"' in html
    assert "data-error-summary" in html
    assert 'href="#id_email"' in html


def test_a_signed_in_user_is_sent_home_from_the_sign_up_page(client, user):
    client.force_login(user)

    response = client.get(reverse("accounts:signup"))

    assert response.status_code == 302
    assert response.url == reverse("home")
