from __future__ import annotations

import pytest

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_the_admin_login_obeys_the_per_account_limit(client, settings):
    settings.LOGIN_RATE_LIMIT_PER_ACCOUNT = 2
    staff = UserFactory(is_staff=True)
    for _ in range(2):
        client.post("/admin/login/", {"username": staff.email, "password": "wrong"})

    blocked = client.post("/admin/login/", {"username": staff.email, "password": "correct-horse-battery-staple"})

    assert blocked.status_code == 429
    assert b"Too many attempts, try again in" in blocked.content
    assert "_auth_user_id" not in client.session


def test_a_staff_login_through_the_admin_still_works(client):
    staff = UserFactory(is_staff=True)

    response = client.post("/admin/login/", {"username": staff.email, "password": "correct-horse-battery-staple"})

    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(staff.pk)
