"""PostgreSQL or Redis out of reach, for real: a web process whose DATABASE_URL or REDIS_URL goes through a
proxy (chaos.proxy) that then refuses connections and cuts the open ones. Requests answer a fast 503 with
Retry-After and a body in their own format instead of hanging or failing with a 500, /readyz says what is
away, what does not need the missing server goes on working, and once it is back everything works again
with no restart."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from accounts import services as account_services
from conversations.models import Message
from tests.factories import UserFactory
from tests.faults import database_proxy, redis_proxy
from tests.live import wait_for, web_server

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("llm_model")]

# A refused connection answers at once; the pool waits DATABASE_POOL_TIMEOUT_S (2 s) for a connection.
# Far from the 30 s a request used to hang for; the fault suite prints the real figures.
FAST_S = 8


def call(url: str, *, method: str = "GET", headers: dict[str, str] | None = None, body: Any = None):
    """(status, headers, body) of one request; errors are answers too."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, _lower(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, _lower(error.headers), error.read()


def _lower(headers: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def timed(url: str, **kwargs: Any) -> tuple[float, tuple[int, dict[str, str], bytes]]:
    started = time.monotonic()
    answer = call(url, **kwargs)
    return time.monotonic() - started, answer


def signed_in(user: Any) -> dict[str, str]:
    browser = Client()
    browser.force_login(user)
    return {"Cookie": f"sessionid={browser.cookies['sessionid'].value}"}


def test_postgresql_away_is_a_fast_503_in_each_format_and_all_is_well_once_it_is_back(chat_model_path, tmp_path):
    user = UserFactory()
    cookie = signed_in(user)
    _key_row, key = account_services.api_key_create(user=user, name="probe")
    bearer = {"Authorization": f"Bearer {key}"}
    with database_proxy() as (proxy, url), web_server(chat_model_path, Path(tmp_path), DATABASE_URL=url) as web:
        assert call(f"{web}/v1/models", headers=bearer)[0] == 200

        proxy.refuse(True)
        v1_seconds, (v1_status, v1_headers, v1_body) = timed(f"{web}/v1/models", headers=bearer)
        api_seconds, (api_status, api_headers, api_body) = timed(f"{web}/api/v1/conversations", headers=bearer)
        page_status, _page_headers, page_body = call(f"{web}/", headers=cookie)
        ready_status, _ready_headers, ready_body = call(f"{web}/readyz")

        assert (v1_status, api_status, page_status, ready_status) == (503, 503, 503, 503)
        assert v1_seconds < FAST_S and api_seconds < FAST_S
        assert v1_headers["retry-after"] == api_headers["retry-after"] == "5"
        assert json.loads(v1_body)["error"]["code"] == "service_unavailable"  # OpenAI's shape: the SDK retries
        assert json.loads(api_body)["code"] == "service_unavailable"
        assert b"back in a moment" in page_body
        assert json.loads(ready_body)["checks"]["database"] == "database unreachable"

        proxy.refuse(False)
        wait_for(lambda: call(f"{web}/v1/models", headers=bearer)[0] == 200, timeout=30)
        assert call(f"{web}/readyz")[0] == 200
        assert call(f"{web}/api/v1/conversations", headers=bearer)[0] == 200


def test_redis_away_keeps_people_signed_in_and_their_messages_and_says_503_where_it_is_needed(
    chat_model_path, tmp_path
):
    user = UserFactory()
    cookie = signed_in(user)
    _key_row, key = account_services.api_key_create(user=user, name="probe")
    bearer = {"Authorization": f"Bearer {key}"}
    completion = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Hi"}]}
    with redis_proxy() as (proxy, url), web_server(chat_model_path, Path(tmp_path), REDIS_URL=url) as web:
        assert call(f"{web}/", headers=cookie)[0] == 200

        proxy.refuse(True)
        page_status, _headers, page = call(f"{web}/", headers=cookie)
        models_status = call(f"{web}/v1/models", headers=bearer)[0]
        sent_status, _headers, sent = call(
            f"{web}/api/v1/conversations", method="POST", headers=bearer, body={"content": "Kept?"}
        )
        v1_seconds, (v1_status, _headers, v1_body) = timed(
            f"{web}/v1/chat/completions", method="POST", headers=bearer, body=completion
        )
        ready_status, _headers, ready_body = call(f"{web}/readyz")

        assert page_status == 200 and b"data-chat-app" in page  # still signed in: sessions live in PostgreSQL
        assert models_status == 200  # API keys do not need Redis
        assert sent_status == 201  # the message is kept, its reply queued until Redis is back
        reply = Message.objects.get(pk=json.loads(sent)["assistant_message"]["id"])
        assert reply.status == Message.Status.QUEUED
        assert reply.parent.content == "Kept?"
        assert v1_status == 503 and v1_seconds < FAST_S
        assert json.loads(v1_body)["error"]["code"] == "service_unavailable"
        assert (ready_status, json.loads(ready_body)["checks"]["redis"]) == (503, "redis unreachable")

        proxy.refuse(False)
        wait_for(lambda: call(f"{web}/readyz")[0] == 200, timeout=30)
        assert call(f"{web}/v1/models", headers=bearer)[0] == 200
