from __future__ import annotations

from django.urls import reverse

from tests.factories import UserFactory


def test_anonymous_visitors_are_sent_to_the_admin_login(client, db):
    response = client.get(reverse("admin:index"))

    assert response.status_code == 302
    assert response.url.startswith(reverse("admin:login"))


def test_users_without_staff_status_are_not_let_in(client, user):
    client.force_login(user)

    response = client.get(reverse("admin:index"), follow=True)

    assert response.redirect_chain[-1][0].startswith(reverse("admin:login"))
    assert b"not authorized to access this page" in response.content


def test_staff_reach_the_admin(client, db):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))

    response = client.get(reverse("admin:index"))

    assert response.status_code == 200


def test_the_user_list_search_finds_by_email_and_name(client, db):
    # given
    client.force_login(UserFactory(is_staff=True, is_superuser=True, email="root@example.com"))
    UserFactory(email="ada@example.com", display_name="Ada Lovelace")
    UserFactory(email="bob@example.com", display_name="Bob")

    # when
    by_email = client.get(reverse("admin:accounts_user_changelist"), {"q": "ada@"})
    by_name = client.get(reverse("admin:accounts_user_changelist"), {"q": "lovelace"})

    # then
    assert by_email.status_code == by_name.status_code == 200
    assert list(by_email.context["cl"].result_list.values_list("email", flat=True)) == ["ada@example.com"]
    assert list(by_name.context["cl"].result_list.values_list("email", flat=True)) == ["ada@example.com"]
