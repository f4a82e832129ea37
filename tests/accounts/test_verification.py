from __future__ import annotations

import time

from django.conf import settings as django_settings
from django.core import signing
from django.urls import reverse

from accounts import tokens
from tests.accounts.conftest import link_in
from tests.factories import UserFactory


def resend(client):
    return client.post(reverse("accounts:verification_resend"), follow=True)


def test_the_link_verifies_the_address(client, committed, outbox, unverified_user):
    # given
    client.force_login(unverified_user)
    with committed():
        resend(client)

    # when
    response = client.get(link_in(outbox[-1]))

    # then
    unverified_user.refresh_from_db()
    assert response.status_code == 302
    assert unverified_user.email_verified


def test_the_link_works_without_being_signed_in_and_leads_to_log_in(client, unverified_user):
    token = tokens.verification_token_make(user=unverified_user)

    response = client.get(reverse("accounts:verify_email", kwargs={"token": token}), follow=True)

    unverified_user.refresh_from_db()
    assert unverified_user.email_verified
    assert response.redirect_chain[-1][0] == reverse("accounts:login")
    assert b"is verified" in response.content


def test_opening_the_link_twice_is_harmless(client, unverified_user):
    url = reverse("accounts:verify_email", kwargs={"token": tokens.verification_token_make(user=unverified_user)})
    client.get(url)
    unverified_user.refresh_from_db()
    first = unverified_user.email_verified_at

    response = client.get(url)

    unverified_user.refresh_from_db()
    assert response.status_code == 302
    assert unverified_user.email_verified_at == first


def test_an_expired_link_explains_and_offers_a_new_one(client, committed, outbox, monkeypatch, unverified_user):
    # given a link signed longer ago than PASSWORD_RESET_TIMEOUT
    client.force_login(unverified_user)
    long_ago = int(time.time()) - django_settings.PASSWORD_RESET_TIMEOUT - 60
    with monkeypatch.context() as past, committed():
        past.setattr(signing.TimestampSigner, "timestamp", lambda self: signing.b62_encode(long_ago))
        resend(client)

    # when
    response = client.get(link_in(outbox[-1]))

    # then
    unverified_user.refresh_from_db()
    assert response.status_code == 400
    assert b"This link has expired" in response.content
    assert reverse("accounts:verification_resend").encode() in response.content
    assert not unverified_user.email_verified


def test_a_tampered_link_explains_and_offers_a_new_one(client, unverified_user):
    # given a link cut short
    client.force_login(unverified_user)
    token = tokens.verification_token_make(user=unverified_user)

    # when
    response = client.get(reverse("accounts:verify_email", kwargs={"token": token[:-4]}))

    # then
    unverified_user.refresh_from_db()
    assert response.status_code == 400
    assert b"This link does not work" in response.content
    assert reverse("accounts:verification_resend").encode() in response.content
    assert not unverified_user.email_verified


def test_a_link_signed_for_another_purpose_is_refused(client, unverified_user):
    token = tokens.email_change_token_make(user=unverified_user, new_email="evil@example.com")

    response = client.get(reverse("accounts:verify_email", kwargs={"token": token}))

    assert response.status_code == 400


def test_a_link_for_an_address_the_account_no_longer_has_is_refused(client, unverified_user):
    # given a link sent before the address changed
    token = tokens.verification_token_make(user=unverified_user)
    unverified_user.email = "new@example.com"
    unverified_user.save()

    # when
    response = client.get(reverse("accounts:verify_email", kwargs={"token": token}))

    # then
    unverified_user.refresh_from_db()
    assert response.status_code == 400
    assert not unverified_user.email_verified


def test_an_anonymous_visitor_with_a_bad_link_is_asked_to_log_in_for_a_new_one(client, db):
    response = client.get(reverse("accounts:verify_email", kwargs={"token": "garbage"}))

    assert response.status_code == 400
    assert b"Log in to get a new link" in response.content


def test_unverified_users_see_a_banner_with_a_resend_button(client, unverified_user):
    client.force_login(unverified_user)

    response = client.get(reverse("home"))

    assert b"Verify your e-mail." in response.content
    assert f'action="{reverse("accounts:verification_resend")}"'.encode() in response.content


def test_verified_users_see_no_banner(client, user):
    client.force_login(user)

    response = client.get(reverse("home"))

    assert b"Verify your e-mail." not in response.content


def test_resending_is_limited_to_one_email_a_minute(client, committed, outbox, unverified_user):
    # given
    client.force_login(unverified_user)
    with committed():
        first = resend(client)

    # when
    with committed():
        second = resend(client)

    # then
    assert b"We sent a new verification link" in first.content
    assert b"less than a minute ago" in second.content
    assert len(outbox) == 1


def test_a_verified_user_gets_no_new_link(client, outbox, user):
    client.force_login(user)

    response = resend(client)

    assert b"already verified" in response.content
    assert outbox == []


def test_the_verification_page_sends_verified_users_home(client, user):
    client.force_login(user)

    response = client.get(reverse("accounts:verification_required"))

    assert response.url == reverse("home")


def test_a_failed_send_is_logged_and_the_sign_up_still_succeeds(client, settings, committed, caplog, db):
    # given a mail server that refuses connections
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 9, 2

    # when
    with committed():
        response = client.post(
            reverse("accounts:signup"),
            {
                "email": "ada@example.com",
                "display_name": "Ada",
                "password1": "analytical-1843",
                "password2": "analytical-1843",
            },
        )

    # then
    assert response.status_code == 302
    assert "e-mail not sent" in caplog.text


def test_the_verification_email_names_the_lifetime_of_its_link(client, committed, outbox, db):
    user = UserFactory(email_verified_at=None)
    client.force_login(user)

    with committed():
        resend(client)

    assert "works for 24 hours" in outbox[-1].body
