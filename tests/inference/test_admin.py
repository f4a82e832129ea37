from __future__ import annotations

import pytest
from django.urls import reverse

from inference.models import LLMModel
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def other():
    return LLMModel.objects.create(name="other", display_name="Other", source="/models/other.gguf")


def act(client, action, *models):
    return client.post(
        reverse("admin:inference_llmmodel_changelist"),
        {"action": action, "_selected_action": [m.pk for m in models]},
        follow=True,
    )


def test_the_model_list_shows_the_bundled_default(admin_client, other):
    response = admin_client.get(reverse("admin:inference_llmmodel_changelist"))

    assert response.status_code == 200
    assert b"smollm2-135m-instruct" in response.content
    assert b"(bundled default model)" in response.content


def test_make_default_moves_the_default_flag(admin_client, other):
    act(admin_client, "make_default", other)

    assert list(LLMModel.objects.filter(is_default=True).values_list("name", flat=True)) == ["other"]


def test_make_default_needs_exactly_one_model(admin_client, other):
    response = act(admin_client, "make_default", other, LLMModel.objects.get(name="smollm2-135m-instruct"))

    assert b"exactly one" in response.content
    assert LLMModel.objects.get(is_default=True).name == "smollm2-135m-instruct"


def test_disable_refuses_the_default_model(admin_client, other):
    response = act(admin_client, "disable", *LLMModel.objects.all())

    assert b"cannot be disabled" in response.content
    assert LLMModel.objects.filter(enabled=True).count() == 2


def test_disable_and_enable(admin_client, other):
    act(admin_client, "disable", other)
    assert not LLMModel.objects.get(pk=other.pk).enabled

    act(admin_client, "enable", other)
    assert LLMModel.objects.get(pk=other.pk).enabled
