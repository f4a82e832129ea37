"""API keys: format and storage, list and revoke, authentication, last-used bookkeeping, settings page, admin."""

from __future__ import annotations

import hashlib
import re
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.test import APIClient, APIRequestFactory

from accounts import api_keys, selectors, services
from accounts.authentication import ApiKeyAuthentication
from accounts.models import ApiKey
from inference.models import LLMModel
from tests.factories import UserFactory

KEY_PATTERN = re.compile(r"^djn_[A-Za-z0-9]{8}_[A-Za-z0-9]{40}$")


def authenticate(header: str):
    request = APIRequestFactory().get("/api/v1/keys", HTTP_AUTHORIZATION=header)
    return ApiKeyAuthentication().authenticate(request)


def bearer_client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def tampered(key: str) -> str:
    return key[:-1] + ("a" if key[-1] != "a" else "b")


# Creating: shown once, stored hashed -------------------------------------------------------------------


def test_a_new_key_is_returned_whole_once_and_only_its_prefix_and_hash_are_stored(user):
    api_key, key = services.api_key_create(user=user, name="  laptop  ")

    api_key.refresh_from_db()
    assert KEY_PATTERN.match(key)
    assert api_key.prefix == key[:12]
    assert api_key.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert api_key.name == "laptop"
    stored = [str(value) for value in ApiKey.objects.filter(pk=api_key.pk).values_list().get()]
    assert not any(key[12:] in value for value in stored)


def test_every_key_is_different(user):
    keys = {services.api_key_create(user=user)[1] for _ in range(20)}

    assert len(keys) == 20
    assert len({key[:12] for key in keys}) == 20


# Listing and revoking -----------------------------------------------------------------------------------


def test_the_list_has_the_users_working_keys_newest_first(user):
    older, _ = services.api_key_create(user=user, name="older")
    newer, _ = services.api_key_create(user=user, name="newer")
    revoked, _ = services.api_key_create(user=user, name="revoked")
    services.api_key_revoke(api_key=revoked)
    services.api_key_create(user=UserFactory(), name="someone else's")

    listed = list(selectors.api_key_list(user=user))

    assert listed == [newer, older]


def test_revoking_twice_revokes_once(user):
    api_key, _ = services.api_key_create(user=user)

    first, second = services.api_key_revoke(api_key=api_key), services.api_key_revoke(api_key=api_key)

    api_key.refresh_from_db()
    assert (first, second) == (True, False)
    assert api_key.revoked_at is not None


def test_another_users_key_cannot_be_fetched_for_revoking(user):
    theirs, _ = services.api_key_create(user=UserFactory())

    with pytest.raises(ApiKey.DoesNotExist):
        selectors.api_key_get(user=user, api_key_id=theirs.pk)


# Authentication -------------------------------------------------------------------------------------------


def test_a_working_key_authenticates_as_its_user(user):
    api_key, key = services.api_key_create(user=user)

    authenticated_user, auth = authenticate(f"Bearer {key}")

    assert authenticated_user == user
    assert auth == api_key


def test_a_request_without_a_bearer_header_is_left_to_the_other_authentication_classes(db):
    assert authenticate("") is None
    assert authenticate("Basic dXNlcjpwYXNz") is None


@pytest.mark.parametrize(
    "make_header",
    [
        pytest.param(lambda key: f"Bearer {tampered(key)}", id="tampered secret"),
        pytest.param(lambda key: f"Bearer {key[:5]}{'Z' if key[5] != 'Z' else 'Y'}{key[6:]}", id="tampered prefix"),
        pytest.param(lambda key: f"Bearer {key}x", id="too long"),
        pytest.param(lambda key: "Bearer sk-not-a-djinn-key", id="foreign key"),
        pytest.param(lambda key: "Bearer", id="no key"),
        pytest.param(lambda key: f"Bearer {key} {key}", id="two keys"),
    ],
)
def test_anything_but_a_working_key_fails_with_invalid_api_key(user, make_header):
    _api_key, key = services.api_key_create(user=user)

    with pytest.raises(AuthenticationFailed) as failure:
        authenticate(make_header(key))

    assert failure.value.get_codes() == "invalid_api_key"


def test_a_revoked_key_stops_working_at_once(user):
    api_key, key = services.api_key_create(user=user)
    client = bearer_client(key)
    assert client.get("/api/v1/keys").status_code == 200

    services.api_key_revoke(api_key=api_key)
    response = client.get("/api/v1/keys")

    assert response.status_code == 401
    assert response.data["detail"].code == "invalid_api_key"
    assert response["WWW-Authenticate"] == "Bearer"


def test_a_tampered_key_gets_a_401_invalid_api_key(user):
    _api_key, key = services.api_key_create(user=user)

    response = bearer_client(tampered(key)).get("/api/v1/keys")

    assert response.status_code == 401
    assert response.data["detail"].code == "invalid_api_key"


def test_the_key_of_a_deactivated_user_does_not_work(user):
    _api_key, key = services.api_key_create(user=user)
    user.is_active = False
    user.save(update_fields=["is_active"])

    response = bearer_client(key).get("/api/v1/keys")

    assert response.status_code == 401
    assert response.data["detail"].code == "invalid_api_key"


def test_no_credentials_at_all_is_a_401_not_a_403(db):
    response = APIClient().get("/api/v1/keys")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"


# last_used_at: one write a minute, not one a request -----------------------------------------------------


def test_a_burst_of_requests_writes_last_used_at_once(user):
    api_key, key = services.api_key_create(user=user)
    client = bearer_client(key)

    with CaptureQueriesContext(connection) as queries:
        for _ in range(20):
            assert client.get("/api/v1/keys").status_code == 200

    updates = [query["sql"] for query in queries if query["sql"].startswith('UPDATE "accounts_apikey"')]
    api_key.refresh_from_db()
    assert len(updates) == 1
    assert api_key.last_used_at is not None


def test_concurrent_requests_that_read_the_key_before_its_first_write_still_write_once(user):
    api_key, _ = services.api_key_create(user=user)
    as_each_request_read_it = [ApiKey.objects.get(pk=api_key.pk) for _ in range(10)]  # last_used_at empty on all

    with CaptureQueriesContext(connection) as queries:
        for copy in as_each_request_read_it:
            services.api_key_mark_used(api_key=copy)

    updates = [query["sql"] for query in queries if query["sql"].startswith('UPDATE "accounts_apikey"')]
    assert len(updates) == 1


def test_a_key_used_again_after_the_interval_records_the_new_time(user, monkeypatch):
    monkeypatch.setattr(api_keys, "LAST_USED_INTERVAL_S", 1)
    api_key, key = services.api_key_create(user=user)
    client = bearer_client(key)
    client.get("/api/v1/keys")
    api_key.refresh_from_db()
    first_use = api_key.last_used_at

    time.sleep(1.1)
    client.get("/api/v1/keys")

    api_key.refresh_from_db()
    assert api_key.last_used_at > first_use


def test_authenticating_costs_one_query_once_last_used_at_is_fresh(user, django_assert_num_queries):
    _api_key, key = services.api_key_create(user=user)
    authenticate(f"Bearer {key}")

    with django_assert_num_queries(1):
        authenticate(f"Bearer {key}")


# The settings page: create -> see once -> revoke ------------------------------------------------------------


def test_the_settings_page_shows_a_new_key_once_then_lists_it_without_the_secret_and_revokes_it(client, user):
    client.force_login(user)
    page = reverse("accounts:settings_api_keys")

    # when a key is created
    created = client.post(page, {"name": "CI runner"})

    # then the POST redirects (a reload cannot create a second key) to the page that shows it, once
    assert created.status_code == 302
    assert created.url == page
    shown = client.get(page)
    (key,) = re.findall(r"djn_[A-Za-z0-9]{8}_[A-Za-z0-9]{40}", shown.content.decode())
    assert "no-store" in shown["Cache-Control"]
    assert ApiKey.objects.filter(user=user).count() == 1
    listing = client.get(page).content.decode()
    assert key not in listing
    assert key[:12] in listing
    assert "CI runner" in listing
    assert "Never" in listing  # last used

    # when it is revoked, after a page that asks to confirm
    api_key = ApiKey.objects.get(prefix=key[:12])
    confirm = client.get(reverse("accounts:settings_api_key_revoke", args=[api_key.pk])).content.decode()
    assert "Revoke “CI runner”?" in confirm
    assert key[:12] in client.get(page).content.decode()  # asking revokes nothing
    revoked = client.post(reverse("accounts:settings_api_key_revoke", args=[api_key.pk]), follow=True)

    # then it is gone from the list and no longer works
    assert f"Key {key[:12]}… revoked." in revoked.content.decode()
    assert key[:12] not in client.get(page).content.decode()
    assert bearer_client(key).get("/api/v1/keys").status_code == 401


def test_the_settings_page_shows_when_a_key_was_last_used(client, user):
    _api_key, key = services.api_key_create(user=user, name="script")
    bearer_client(key).get("/api/v1/keys")
    client.force_login(user)

    page = client.get(reverse("accounts:settings_api_keys")).content.decode()

    assert "Never" not in page
    assert "ago" in page


def test_a_name_too_long_is_a_form_error_and_creates_nothing(client, user):
    client.force_login(user)

    response = client.post(reverse("accounts:settings_api_keys"), {"name": "x" * 101})

    assert response.status_code == 200
    assert b"Ensure this value has at most 100 characters" in response.content
    assert not ApiKey.objects.exists()


def test_another_users_key_cannot_be_revoked_from_the_settings_page(client, user):
    theirs, _key = services.api_key_create(user=UserFactory())
    client.force_login(user)

    response = client.post(reverse("accounts:settings_api_key_revoke", args=[theirs.pk]))

    theirs.refresh_from_db()
    assert response.status_code == 404
    assert theirs.revoked_at is None


def test_the_revoke_confirmation_page_revokes_nothing_and_hides_other_users_keys(client, user):
    api_key, _ = services.api_key_create(user=user)
    theirs, _key = services.api_key_create(user=UserFactory())
    client.force_login(user)

    response = client.get(reverse("accounts:settings_api_key_revoke", args=[api_key.pk]))
    other = client.get(reverse("accounts:settings_api_key_revoke", args=[theirs.pk]))

    api_key.refresh_from_db()
    assert response.status_code == 200
    assert api_key.revoked_at is None
    assert other.status_code == 404


def test_the_api_keys_page_needs_a_signed_in_user(client, db):
    response = client.get(reverse("accounts:settings_api_keys"))

    assert response.status_code == 302
    assert response.url.startswith(reverse("accounts:login"))


# The developer page ----------------------------------------------------------------------------------------


def test_the_developer_page_fills_the_examples_with_this_host_and_the_default_model(client, user, settings):
    settings.ALLOWED_HOSTS = ["djinn.example.com"]
    LLMModel.objects.update_or_create(name="house-model", defaults={"display_name": "House", "is_default": False})
    LLMModel.objects.filter(is_default=True).update(is_default=False, enabled=False)
    client.force_login(user)

    page = client.get(reverse("developers"), HTTP_HOST="djinn.example.com").content.decode()

    assert 'base_url="http://djinn.example.com/v1"' in page
    assert "curl http://djinn.example.com/v1/chat/completions" in page
    assert 'model="house-model"' in page
    assert "from openai import OpenAI" in page


# Admin: see and revoke, never the secret -----------------------------------------------------------------


@pytest.fixture
def admin_client(client, db):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def test_admins_find_keys_by_owner_email_name_or_prefix_and_never_see_the_hash(admin_client, user):
    api_key, key = services.api_key_create(user=user, name="laptop")
    services.api_key_create(user=UserFactory(email="someone@example.com"), name="other")
    changelist = reverse("admin:accounts_apikey_changelist")

    for term in ("ada@example", "Ada Love", "laptop", api_key.prefix, key):
        page = admin_client.get(changelist, {"q": term}).content.decode()
        assert api_key.prefix in page, term
        assert "someone@example.com" not in page, term

    detail = admin_client.get(reverse("admin:accounts_apikey_change", args=[api_key.pk])).content.decode()
    assert api_key.key_hash not in detail
    assert key not in detail


def test_admins_revoke_keys_with_the_action(admin_client, user):
    first, _ = services.api_key_create(user=user)
    second, _ = services.api_key_create(user=user)

    response = admin_client.post(
        reverse("admin:accounts_apikey_changelist"),
        {"action": "revoke", "_selected_action": [first.pk, second.pk]},
        follow=True,
    )

    assert "Revoked 2 API keys." in response.content.decode()
    assert not selectors.api_key_list(user=user).exists()


def test_admins_cannot_add_keys_there(admin_client):
    response = admin_client.get(reverse("admin:accounts_apikey_add"))

    assert response.status_code == 403
