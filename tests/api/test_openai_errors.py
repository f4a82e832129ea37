"""/v1 errors: OpenAI's JSON shape and status, raised by the SDK as its own exception classes."""

from __future__ import annotations

import openai
import pytest

from accounts import services
from accounts.models import ApiKey
from tests.api.openai_support import HELLO, MODEL, raw, sdk

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker", "llm_model")]


@pytest.fixture
def client(live_server_url, api_key):
    return sdk(live_server_url, api_key)


def create(client, **kwargs):
    return client.chat.completions.create(**{"model": MODEL, "messages": HELLO, "max_tokens": 4, **kwargs})


def error_of(response):
    return response.json()["error"]


def test_a_wrong_key_is_an_authentication_error(live_server_url):
    client = sdk(live_server_url, "djn_AAAAAAAA_" + "B" * 40)

    with pytest.raises(openai.AuthenticationError) as raised:
        create(client)

    assert raised.value.status_code == 401
    assert raised.value.code == "invalid_api_key"
    assert raised.value.type == "invalid_request_error"


def test_a_revoked_key_is_an_authentication_error(live_server_url, api_key):
    services.api_key_revoke(api_key=ApiKey.objects.get())

    with pytest.raises(openai.AuthenticationError) as raised:
        sdk(live_server_url, api_key).models.list()

    assert raised.value.code == "invalid_api_key"


def test_a_missing_key_is_a_401_coded_invalid_api_key(live_server_url):
    response = raw(live_server_url, "POST", "/v1/chat/completions", json={"model": MODEL, "messages": HELLO})

    assert response.status_code == 401
    assert error_of(response) == {
        "message": error_of(response)["message"],
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
    assert "API key" in error_of(response)["message"]


def test_a_session_cookie_is_not_a_key(live_server_url, api_user):
    from django.test import Client

    session = Client()
    session.force_login(api_user)
    cookie = session.cookies["sessionid"].value

    response = raw(live_server_url, "GET", "/v1/models", cookies={"sessionid": cookie})

    assert response.status_code == 401


def test_an_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as raised:
        create(client, model="gpt-17")

    assert raised.value.code == "model_not_found"
    assert raised.value.param == "model"
    assert "gpt-17" in raised.value.message


def test_a_disabled_model_is_not_found(client, llm_model):
    llm_model.enabled = False
    llm_model.save()

    with pytest.raises(openai.NotFoundError) as raised:
        create(client)

    assert raised.value.code == "model_not_found"


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"logit_bias": {"42": 10}}, "logit_bias"),
        ({"store": True}, "store"),
        ({"reasoning_effort": "high"}, "reasoning_effort"),
        ({"extra_body": {"best_of": 3}}, "best_of"),
        ({"messages": [{"role": "tool", "content": "42", "tool_call_id": "call_1"}]}, "messages[0].role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages[0].content[0].type",
        ),
    ],
)
def test_an_unsupported_parameter_is_a_bad_request_naming_it(client, kwargs, param):
    with pytest.raises(openai.BadRequestError) as raised:
        create(client, **kwargs)

    assert raised.value.status_code == 400
    assert raised.value.type == "invalid_request_error"
    assert raised.value.param == param
    assert raised.value.code in {"unsupported_parameter", "unknown_parameter"}


@pytest.mark.parametrize(
    ("kwargs", "param", "code"),
    [
        ({"temperature": "hot"}, "temperature", "invalid_type"),
        ({"max_tokens": "many"}, "max_tokens", "invalid_type"),
        ({"stream": "yes"}, "stream", "invalid_type"),
        ({"stop": [1, 2]}, "stop", "invalid_type"),
        ({"messages": "Hello"}, "messages", "invalid_type"),
        ({"messages": [{"role": "user", "content": 42}]}, "messages[0].content", "invalid_type"),
        ({"messages": [{"role": "robot", "content": "Hi"}]}, "messages[0].role", "invalid_value"),
        ({"messages": [{"role": {}, "content": "Hi"}]}, "messages[0].role", "invalid_type"),  # found by fuzzing
        ({"messages": []}, "messages", "invalid_value"),
        ({"temperature": 2.5}, "temperature", "invalid_value"),
        ({"top_p": 1.5}, "top_p", "invalid_value"),
        ({"max_tokens": 0}, "max_tokens", "invalid_value"),
        ({"n": 100}, "n", "invalid_value"),
        ({"top_logprobs": 3}, "top_logprobs", "invalid_value"),
        ({"stream_options": {"include_usage": True}}, "stream_options", "invalid_value"),
    ],
)
def test_a_wrong_value_or_type_is_a_bad_request_naming_it(client, kwargs, param, code):
    with pytest.raises(openai.BadRequestError) as raised:
        create(client, **kwargs)

    assert raised.value.param == param
    assert raised.value.code == code


def test_a_missing_field_is_a_bad_request_naming_it(live_server_url, api_key):
    response = raw(live_server_url, "POST", "/v1/chat/completions", key=api_key, json={"model": MODEL})

    assert response.status_code == 400
    assert error_of(response)["param"] == "messages"
    assert error_of(response)["code"] == "missing_required_parameter"


def test_a_body_that_is_not_json_is_a_bad_request(live_server_url, api_key):
    response = raw(
        live_server_url,
        "POST",
        "/v1/chat/completions",
        key=api_key,
        content=b'{"model": "x", messages: }',
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 400
    assert error_of(response)["type"] == "invalid_request_error"
    assert error_of(response)["code"] == "invalid_json"


def test_messages_longer_than_the_context_are_a_bad_request_coded_context_length_exceeded(client):
    with pytest.raises(openai.BadRequestError) as raised:
        create(client, messages=[{"role": "user", "content": "hello " * 600}])

    assert raised.value.code == "context_length_exceeded"
    assert raised.value.param == "messages"
    assert "512" in raised.value.message  # the tiny model's context


def test_max_tokens_beyond_the_context_is_a_bad_request_coded_context_length_exceeded(client):
    with pytest.raises(openai.BadRequestError) as raised:
        create(client, max_tokens=600)

    assert raised.value.code == "context_length_exceeded"


def test_an_unknown_v1_path_is_a_json_404(live_server_url, api_key):
    response = raw(live_server_url, "GET", "/v1/engines/davinci", key=api_key)

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert error_of(response) == {
        "message": "Invalid URL (GET /v1/engines/davinci)",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


def test_a_wrong_method_is_a_json_405(live_server_url, api_key):
    response = raw(live_server_url, "GET", "/v1/chat/completions", key=api_key)

    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert error_of(response)["code"] == "method_not_allowed"
    assert error_of(response)["type"] == "invalid_request_error"
