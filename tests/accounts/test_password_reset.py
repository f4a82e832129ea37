from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings as django_settings
from django.contrib.auth.tokens import default_token_generator
from django.urls import reverse

from tests.accounts.conftest import link_in

NEW_PASSWORD = "quiet-harbor-compass-77"


def request_reset(client, email: str):
    return client.post(reverse("accounts:password_reset"), {"email": email})


def test_the_reset_request_looks_the_same_whether_or_not_the_address_has_an_account(client, outbox, user):
    # when
    known = request_reset(client, "ADA@example.com")
    unknown = request_reset(client, "nobody@example.com")

    # then both go to the same page; only the real account gets an e-mail
    assert known.status_code == unknown.status_code == 302
    assert known.url == unknown.url == reverse("accounts:password_reset_done")
    assert [message.to for message in outbox] == [["ada@example.com"]]


def test_the_reset_link_sets_a_new_password(client, outbox, user):
    # given
    request_reset(client, user.email)

    # when
    form_page = client.get(link_in(outbox[-1]))
    response = client.post(form_page.url, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})

    # then
    user.refresh_from_db()
    assert response.url == reverse("accounts:password_reset_complete")
    assert user.check_password(NEW_PASSWORD)


def test_the_reset_form_rejects_a_weak_new_password(client, outbox, user):
    request_reset(client, user.email)
    form_page = client.get(link_in(outbox[-1]))

    response = client.post(form_page.url, {"new_password1": "12345678", "new_password2": "12345678"})

    assert response.status_code == 200
    assert b"This password is too common." in response.content


def test_an_expired_reset_link_explains_and_offers_a_new_one(client, outbox, monkeypatch, user):
    # given a link made longer ago than PASSWORD_RESET_TIMEOUT
    long_ago = datetime.now() - timedelta(seconds=django_settings.PASSWORD_RESET_TIMEOUT + 60)
    with monkeypatch.context() as past:
        past.setattr(default_token_generator, "_now", lambda: long_ago)
        request_reset(client, user.email)

    # when
    response = client.get(link_in(outbox[-1]), follow=True)

    # then
    assert response.status_code == 200
    assert b"This link does not work" in response.content
    assert reverse("accounts:password_reset").encode() in response.content


def test_a_tampered_reset_link_explains_and_offers_a_new_one(client, outbox, user):
    # given
    request_reset(client, user.email)
    link = link_in(outbox[-1])

    # when
    response = client.get(link.rstrip("/")[:-3] + "/", follow=True)

    # then
    assert response.status_code == 200
    assert b"This link does not work" in response.content


def test_a_used_reset_link_does_not_work_twice(client, outbox, user):
    # given
    request_reset(client, user.email)
    link = link_in(outbox[-1])
    form_page = client.get(link)
    client.post(form_page.url, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})

    # when
    response = client.get(link, follow=True)

    # then
    assert b"This link does not work" in response.content
