"""GET /v1/models and /v1/models/{id} through the official openai SDK: the enabled models only."""

from __future__ import annotations

import openai
import pytest

from tests.api.openai_support import MODEL, sdk
from tests.conversations.factories import LLMModelFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("llm_model")]


@pytest.fixture
def client(live_server_url, api_key):
    return sdk(live_server_url, api_key)


def test_the_list_has_the_enabled_models_default_first(client):
    LLMModelFactory(name="zephyr-tiny", display_name="Zephyr", is_default=False)
    LLMModelFactory(name="alpaca-tiny", display_name="Alpaca", is_default=False)
    LLMModelFactory(name="retired", display_name="Retired", is_default=False, enabled=False)

    models = client.models.list()

    assert [model.id for model in models] == [MODEL, "alpaca-tiny", "zephyr-tiny"]
    assert {model.object for model in models} == {"model"}
    assert {model.owned_by for model in models} == {"djinn"}
    assert all(model.created > 0 for model in models)


def test_one_model_is_retrieved_by_its_id(client, llm_model):
    model = client.models.retrieve(MODEL)

    assert model.id == MODEL
    assert model.object == "model"
    assert model.created == int(llm_model.created.timestamp())


@pytest.mark.parametrize("name", ["gpt-17", "retired"])
def test_an_unknown_or_disabled_model_is_not_found(client, name):
    LLMModelFactory(name="retired", display_name="Retired", is_default=False, enabled=False)

    with pytest.raises(openai.NotFoundError) as raised:
        client.models.retrieve(name)

    assert raised.value.code == "model_not_found"
    assert raised.value.param == "model"


def test_listing_needs_a_key(live_server_url):
    with pytest.raises(openai.AuthenticationError) as raised:
        sdk(live_server_url, "not-a-key").models.list()

    assert raised.value.code == "invalid_api_key"
