from __future__ import annotations

from django.urls import reverse

from tests.factories import UserFactory

TOO_MANY = "Too many attempts, try again in 15 minutes."


def log_in(client, email: str, password: str, ip: str = "203.0.113.7", **extra: str):
    return client.post(reverse("accounts:login"), {"email": email, "password": password, **extra}, REMOTE_ADDR=ip)


def test_log_in_with_the_right_password_in_any_case_signs_in(client, user, password):
    response = log_in(client, "ADA@example.COM", password)

    assert response.status_code == 302
    assert response.url == reverse("home")
    assert client.session["_auth_user_id"] == str(user.pk)


def test_log_in_with_a_wrong_password_says_so_without_naming_the_field(client, user):
    response = log_in(client, "ada@example.com", "not-the-password")

    assert response.status_code == 200
    assert b"The e-mail address or password is not right." in response.content
    assert "_auth_user_id" not in client.session


def test_log_in_follows_a_next_url_on_this_site(client, user, password):
    response = log_in(client, "ada@example.com", password, next="/accounts/settings/")

    assert response.url == "/accounts/settings/"


def test_log_in_ignores_a_next_url_on_another_site(client, user, password):
    response = log_in(client, "ada@example.com", password, next="https://evil.example/steal")

    assert response.url == reverse("home")


def test_login_is_refused_after_too_many_failures_for_one_account(client, settings, user, password):
    # given three failures for this account, from three addresses
    settings.LOGIN_RATE_LIMIT_PER_ACCOUNT = 3
    for ip in ["198.51.100.1", "198.51.100.2", "198.51.100.3"]:
        log_in(client, "ada@example.com", "wrong", ip=ip)

    # when the right password comes next, from yet another address
    response = log_in(client, "ada@example.com", password, ip="198.51.100.4")

    # then it is refused on a normal page with a clear message
    assert response.status_code == 429
    assert TOO_MANY.encode() in response.content
    assert b'<form method="post"' in response.content
    assert "_auth_user_id" not in client.session


def test_the_account_limit_does_not_block_other_accounts(client, settings, user, password):
    # given
    settings.LOGIN_RATE_LIMIT_PER_ACCOUNT = 3
    other = UserFactory(email="bob@example.com")
    for _ in range(3):
        log_in(client, "ada@example.com", "wrong")

    # when
    response = log_in(client, other.email, password)

    # then
    assert response.status_code == 302


def test_login_is_refused_after_too_many_failures_from_one_address(client, settings, user, password):
    # given failures for several accounts from one IP
    settings.LOGIN_RATE_LIMIT_PER_IP = 3
    for email in ["a@example.com", "b@example.com", "c@example.com"]:
        log_in(client, email, "wrong", ip="192.0.2.10")

    # when
    blocked = log_in(client, "ada@example.com", password, ip="192.0.2.10")
    elsewhere = log_in(client, "ada@example.com", password, ip="192.0.2.11")

    # then
    assert blocked.status_code == 429
    assert TOO_MANY.encode() in blocked.content
    assert elsewhere.status_code == 302


def test_a_successful_login_clears_the_account_counter(client, settings, user, password):
    # given two failures, one short of the limit, then a success
    settings.LOGIN_RATE_LIMIT_PER_ACCOUNT = 3
    log_in(client, "ada@example.com", "wrong")
    log_in(client, "ada@example.com", "wrong")
    log_in(client, "ada@example.com", password)
    client.post(reverse("accounts:logout"))

    # when two more failures follow
    log_in(client, "ada@example.com", "wrong")
    log_in(client, "ada@example.com", "wrong")
    response = log_in(client, "ada@example.com", password)

    # then the count started again after the success
    assert response.status_code == 302


def test_unknown_addresses_are_limited_like_real_ones(client, settings, db):
    settings.LOGIN_RATE_LIMIT_PER_ACCOUNT = 2
    log_in(client, "nobody@example.com", "wrong")
    log_in(client, "nobody@example.com", "wrong")

    response = log_in(client, "nobody@example.com", "wrong")

    assert response.status_code == 429


def test_log_out_needs_a_post(client, user):
    # given
    client.force_login(user)

    # when
    asked = client.get(reverse("accounts:logout"))
    still_in = "_auth_user_id" in client.session
    done = client.post(reverse("accounts:logout"))

    # then
    assert asked.status_code == 200
    assert still_in
    assert done.status_code == 302
    assert "_auth_user_id" not in client.session


def test_the_header_offers_log_in_to_visitors_and_a_menu_to_users(client, user):
    anonymous = client.get(reverse("home")).content.decode()
    client.force_login(user)
    signed_in = client.get(reverse("home")).content.decode()

    assert reverse("accounts:login") in anonymous
    assert reverse("accounts:signup") in anonymous
    assert f'action="{reverse("accounts:logout")}"' in signed_in
    assert reverse("accounts:settings_profile") in signed_in
    assert reverse("admin:index") not in signed_in


def test_staff_see_the_admin_link(client, db):
    client.force_login(UserFactory(is_staff=True))

    response = client.get(reverse("home"))

    assert reverse("admin:index").encode() in response.content


def test_an_empty_log_in_form_says_what_is_missing(client, db):
    response = client.post(reverse("accounts:login"), {})

    assert response.status_code == 200
    assert b"This field is required." in response.content
