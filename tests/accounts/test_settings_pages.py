from __future__ import annotations

from django.test import Client
from django.urls import reverse
from django.utils.html import escape

from accounts import forms
from accounts.models import User
from tests.accounts.conftest import link_in
from tests.factories import UserFactory

NEW_PASSWORD = "velvet-orbit-lantern-42"


def test_settings_pages_need_a_signed_in_user(client, db):
    response = client.get(reverse("accounts:settings_profile"))

    assert response.status_code == 302
    assert response.url == f"{reverse('accounts:login')}?next={reverse('accounts:settings_profile')}"


def test_the_profile_form_saves_name_and_custom_instructions(client, user):
    client.force_login(user)

    response = client.post(
        reverse("accounts:settings_profile"),
        {"display_name": "  Countess  ", "custom_instructions": "Answer in French."},
        follow=True,
    )

    user.refresh_from_db()
    assert user.display_name == "Countess"
    assert user.custom_instructions == "Answer in French."
    assert b"Profile saved." in response.content


def test_the_profile_needs_a_display_name(client, user):
    client.force_login(user)

    response = client.post(reverse("accounts:settings_profile"), {"display_name": "", "custom_instructions": ""})

    user.refresh_from_db()
    assert response.status_code == 200
    assert b"This field is required." in response.content
    assert user.display_name == "Ada Lovelace"


# E-mail change: the old address stays until the new one is confirmed --------------------------------


def change_email(client, new_email: str, password: str):
    return client.post(reverse("accounts:settings_email"), {"new_email": new_email, "password": password})


def test_changing_the_email_keeps_the_old_address_until_the_new_one_is_confirmed(
    client, committed, outbox, user, password
):
    # given
    client.force_login(user)

    # when the change is asked for
    with committed():
        change_email(client, "Ada@Analytical.example", password)

    # then only a link to the new address goes out, and nothing changes yet
    user.refresh_from_db()
    assert user.email == "ada@example.com"
    assert user.email_verified
    assert outbox[-1].to == ["ada@analytical.example"]

    # when the link is opened
    with committed():
        client.get(link_in(outbox[-1]))

    # then the account signs in with the new, verified address and the old one is told
    user.refresh_from_db()
    assert user.email == "ada@analytical.example"
    assert user.email_verified
    assert outbox[-1].to == ["ada@example.com"]
    assert "ada@analytical.example" in outbox[-1].body


def test_confirming_a_new_email_also_verifies_it(client, committed, outbox, unverified_user, password):
    client.force_login(unverified_user)
    with committed():
        change_email(client, "grace@navy.example", password)

    client.get(link_in(outbox[0]))

    unverified_user.refresh_from_db()
    assert unverified_user.email == "grace@navy.example"
    assert unverified_user.email_verified


def test_an_email_change_needs_the_current_password(client, committed, outbox, user):
    client.force_login(user)

    with committed():
        response = change_email(client, "ada@analytical.example", "wrong")

    assert response.status_code == 200
    assert escape(forms.PASSWORD_WRONG) in response.content.decode()
    assert outbox == []


def test_an_email_change_to_a_taken_address_is_refused(client, user, password):
    client.force_login(user)
    UserFactory(email="bob@example.com")

    response = change_email(client, "BOB@example.com", password)

    assert b"Another account already uses this e-mail address." in response.content


def test_an_email_change_link_works_once(client, committed, outbox, user, password):
    # given a confirmed change
    client.force_login(user)
    with committed():
        change_email(client, "ada@analytical.example", password)
    link = link_in(outbox[0])
    with committed():
        client.get(link)

    # when the same link is opened again
    response = client.get(link)

    # then
    assert response.status_code == 400
    assert b"This link does not work" in response.content


def test_an_email_change_link_fails_clearly_when_the_address_was_taken_meanwhile(
    client, committed, outbox, user, password
):
    # given
    client.force_login(user)
    with committed():
        change_email(client, "ada@analytical.example", password)
    UserFactory(email="ada@analytical.example")

    # when
    response = client.get(link_in(outbox[0]))

    # then
    user.refresh_from_db()
    assert response.status_code == 400
    assert b"That address is taken" in response.content
    assert user.email == "ada@example.com"


def test_a_tampered_email_change_link_changes_nothing(client, committed, outbox, user, password):
    client.force_login(user)
    with committed():
        change_email(client, "ada@analytical.example", password)

    response = client.get(link_in(outbox[0]).rstrip("/")[:-4] + "/")

    user.refresh_from_db()
    assert response.status_code == 400
    assert user.email == "ada@example.com"


# Password change --------------------------------------------------------------------------------------


def test_changing_the_password_keeps_this_session_and_ends_others(client, user, password):
    # given the user signed in here and on another device
    other_device = Client()
    other_device.force_login(user)
    client.force_login(user)

    # when
    response = client.post(
        reverse("accounts:settings_password"),
        {"old_password": password, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
        follow=True,
    )

    # then
    user.refresh_from_db()
    assert b"Password changed." in response.content
    assert user.check_password(NEW_PASSWORD)
    assert client.get(reverse("accounts:settings_password")).status_code == 200
    assert other_device.get(reverse("accounts:settings_password")).status_code == 302


def test_a_password_change_needs_the_current_password(client, user):
    client.force_login(user)

    response = client.post(
        reverse("accounts:settings_password"),
        {"old_password": "wrong", "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )

    user.refresh_from_db()
    assert escape(forms.PASSWORD_WRONG) in response.content.decode()
    assert not user.check_password(NEW_PASSWORD)


def test_a_password_change_with_mismatched_passwords_says_so(client, user, password):
    client.force_login(user)

    response = client.post(
        reverse("accounts:settings_password"),
        {"old_password": password, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD + "!"},
    )

    assert escape(forms.PASSWORD_MISMATCH) in response.content.decode()


# Delete account ---------------------------------------------------------------------------------------


def test_deleting_the_account_needs_the_password(client, user):
    client.force_login(user)

    response = client.post(reverse("accounts:settings_delete"), {"password": "wrong"})

    assert response.status_code == 200
    assert escape(forms.PASSWORD_WRONG) in response.content.decode()
    assert User.objects.filter(pk=user.pk).exists()


def test_deleting_the_account_removes_it_and_logs_out(client, user, password):
    client.force_login(user)

    response = client.post(reverse("accounts:settings_delete"), {"password": password}, follow=True)

    assert not User.objects.filter(pk=user.pk).exists()
    assert "_auth_user_id" not in client.session
    assert b"Your account and everything in it have been deleted." in response.content
    assert response.redirect_chain[-1][0] == reverse("home")
