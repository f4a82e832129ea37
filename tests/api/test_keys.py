"""/api/v1/keys: list and revoke one's own keys by API key or session; create them in a session only."""

from __future__ import annotations

import re

import pytest
from rest_framework.test import APIClient

from accounts import selectors, services
from accounts.models import ApiKey
from tests.api.conftest import client_with_key


@pytest.fixture
def session_client(api_user) -> APIClient:
    """The signed-in browser (CSRF is checked in test_the_signed_in_web_session...)."""
    client = APIClient()
    client.force_login(api_user)
    return client


def test_the_list_shows_prefix_name_and_dates_never_the_secret(api_client, api_key, api_user):
    response = api_client.get("/api/v1/keys")

    assert response.status_code == 200
    (listed,) = response.json()
    assert set(listed) == {"id", "name", "prefix", "created_at", "last_used_at"}
    assert listed["prefix"] == api_key[:12]
    assert listed["name"] == "test key"
    assert api_key not in response.content.decode()
    assert api_key[12:] not in response.content.decode()


def test_creating_returns_the_whole_key_once_and_it_works(session_client, api_user):
    response = session_client.post("/api/v1/keys", {"name": "deploy"}, format="json")

    assert response.status_code == 201
    created = response.json()
    assert re.fullmatch(r"djn_[A-Za-z0-9]{8}_[A-Za-z0-9]{40}", created["key"])
    assert created["name"] == "deploy"
    assert created["prefix"] == created["key"][:12]
    assert client_with_key(created["key"]).get("/api/v1/keys").status_code == 200
    listing = session_client.get("/api/v1/keys").content.decode()
    assert created["prefix"] in listing
    assert created["key"] not in listing


def test_a_key_needs_no_name(session_client):
    response = session_client.post("/api/v1/keys", {}, format="json")

    assert response.status_code == 201
    assert response.json()["name"] == ""


def test_a_name_too_long_is_a_400_naming_the_field(session_client, api_user):
    response = session_client.post("/api/v1/keys", {"name": "x" * 101}, format="json")

    assert response.status_code == 400
    assert "name" in response.json()
    assert not ApiKey.objects.filter(user=api_user).exists()


def test_the_length_limit_counts_the_name_as_sent_before_nul_characters_are_dropped(session_client, api_user):
    # The schema's maxLength is about the string sent; PostgreSQL cannot store NUL, so it goes after the check.
    too_long = session_client.post("/api/v1/keys", {"name": "\x00" + "x" * 100}, format="json")
    at_the_limit = session_client.post("/api/v1/keys", {"name": "\x00" + "x" * 99}, format="json")

    assert too_long.status_code == 400
    assert "name" in too_long.json()
    assert at_the_limit.status_code == 201
    assert at_the_limit.json()["name"] == "x" * 99


def test_revoking_a_key_stops_it_at_once(api_client, api_user):
    api_key, key = services.api_key_create(user=api_user, name="old")

    response = api_client.delete(f"/api/v1/keys/{api_key.pk}")

    assert response.status_code == 204
    assert client_with_key(key).get("/api/v1/keys").status_code == 401
    assert api_key not in selectors.api_key_list(user=api_user)


def test_a_key_can_revoke_itself_and_then_fails(api_client, api_key):
    own = ApiKey.objects.get(prefix=api_key[:12])

    assert api_client.delete(f"/api/v1/keys/{own.pk}").status_code == 204
    response = api_client.get("/api/v1/keys")

    assert response.status_code == 401
    assert response.data["detail"].code == "invalid_api_key"


def test_another_users_key_is_not_found_and_stays_working(api_client, other_api_client, other_api_user):
    theirs = selectors.api_key_list(user=other_api_user).get()

    response = api_client.delete(f"/api/v1/keys/{theirs.pk}")

    assert response.status_code == 404
    assert other_api_client.get("/api/v1/keys").status_code == 200


def test_each_user_lists_only_their_own_keys(api_client, other_api_client, api_key):
    mine = api_client.get("/api/v1/keys").json()
    theirs = other_api_client.get("/api/v1/keys").json()

    assert [key["prefix"] for key in mine] == [api_key[:12]]
    assert api_key[:12] not in [key["prefix"] for key in theirs]


def test_an_unknown_or_out_of_range_id_is_not_found(api_client):
    assert api_client.delete("/api/v1/keys/999999").status_code == 404
    assert api_client.delete(f"/api/v1/keys/{2**70}").status_code == 404


def test_an_already_revoked_key_is_not_found(api_client, api_user):
    api_key, _ = services.api_key_create(user=api_user)
    services.api_key_revoke(api_key=api_key)

    assert api_client.delete(f"/api/v1/keys/{api_key.pk}").status_code == 404


def test_without_credentials_it_is_a_401_with_a_bearer_challenge(anonymous_api_client):
    response = anonymous_api_client.get("/api/v1/keys")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"


def test_the_signed_in_web_session_works_and_its_writes_need_the_csrf_token(api_user):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(api_user)

    assert client.get("/api/v1/keys").status_code == 200
    assert client.post("/api/v1/keys", {"name": "from the browser"}, format="json").status_code == 403


def test_an_api_key_cannot_create_keys(api_client, api_user):
    before = list(selectors.api_key_list(user=api_user))

    response = api_client.post("/api/v1/keys", {"name": "a second way in"}, format="json")

    assert response.status_code == 403
    assert "signed-in session" in response.json()["detail"]
    assert list(selectors.api_key_list(user=api_user)) == before
