"""The whole life of an account, through the pages, the way a person goes through it."""

from __future__ import annotations

from django.urls import reverse

from accounts.models import User
from tests.accounts.conftest import link_in

FIRST_PASSWORD = "analytical-engine-1843"
NEW_PASSWORD = "velvet-orbit-lantern-42"
RESET_PASSWORD = "quiet-harbor-compass-77"


def test_sign_up_verify_log_in_change_password_log_out_reset_and_log_in_again(client, outbox, committed, db):
    # given a visitor who signs up
    with committed():
        response = client.post(
            reverse("accounts:signup"),
            {
                "email": "Ada@Example.com",
                "display_name": "Ada",
                "password1": FIRST_PASSWORD,
                "password2": FIRST_PASSWORD,
            },
        )
    assert response.status_code == 302
    user = User.objects.get(email="ada@example.com")
    assert not user.email_verified
    assert client.get(reverse("home")).context["user"] == user
    assert outbox[-1].to == ["ada@example.com"]

    # when they open the verification link
    response = client.get(link_in(outbox[-1]), follow=True)

    # then the address is verified and the banner is gone
    user.refresh_from_db()
    assert user.email_verified
    assert b"Verify your e-mail." not in response.content

    # when they log out and log in again
    client.post(reverse("accounts:logout"))
    response = client.post(reverse("accounts:login"), {"email": "ada@example.com", "password": FIRST_PASSWORD})
    assert response.status_code == 302

    # and change their password
    response = client.post(
        reverse("accounts:settings_password"),
        {"old_password": FIRST_PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )

    # then they are still logged in
    assert response.status_code == 302
    assert client.get(reverse("accounts:settings_password")).status_code == 200

    # when they log out
    client.post(reverse("accounts:logout"))
    assert client.get(reverse("accounts:settings_profile")).status_code == 302

    # and reset the password they forgot
    client.post(reverse("accounts:password_reset"), {"email": "ada@example.com"})
    set_password_page = client.get(link_in(outbox[-1]))
    response = client.post(set_password_page.url, {"new_password1": RESET_PASSWORD, "new_password2": RESET_PASSWORD})
    assert response.url == reverse("accounts:password_reset_complete")

    # then the new password logs them in and the old one does not
    old = client.post(reverse("accounts:login"), {"email": "ada@example.com", "password": NEW_PASSWORD})
    assert old.status_code == 200
    new = client.post(reverse("accounts:login"), {"email": "ada@example.com", "password": RESET_PASSWORD})
    assert new.status_code == 302
    assert client.get(reverse("home")).context["user"] == user
