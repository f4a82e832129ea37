from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from inference.models import LLMModel
from inference.registry import model_get, model_list_enabled, model_source

pytestmark = pytest.mark.django_db


@pytest.fixture
def default_model():
    return LLMModel.objects.get(name="smollm2-135m-instruct")


def add(name, **fields):
    return LLMModel.objects.create(name=name, display_name=name.title(), **fields)


def test_the_migration_registers_the_bundled_model_as_default(default_model):
    assert default_model.is_default
    assert default_model.enabled
    assert default_model.source == ""
    assert default_model.context_length == 0


def test_no_name_means_the_default_model(default_model):
    add("other")

    assert model_get(None) == default_model
    assert model_get("") == default_model


def test_a_name_finds_that_enabled_model():
    other = add("other", source="/models/other.gguf")

    assert model_get("other") == other


def test_unknown_and_disabled_models_do_not_exist():
    add("retired", enabled=False)

    for name in ("nope", "retired"):
        with pytest.raises(LLMModel.DoesNotExist):
            model_get(name)


def test_without_a_default_entry_the_first_enabled_model_answers(default_model):
    default_model.delete()
    add("zeta")
    alpha = add("alpha")

    assert model_get(None) == alpha


def test_with_no_enabled_model_there_is_none():
    LLMModel.objects.update(enabled=False, is_default=False)

    with pytest.raises(LLMModel.DoesNotExist):
        model_get(None)


def test_enabled_models_list_the_default_first(default_model):
    add("aaa")
    add("off", enabled=False)

    assert [m.name for m in model_list_enabled()] == ["smollm2-135m-instruct", "aaa"]


def test_djinn_model_overrides_the_default_entrys_source_only(settings, default_model):
    other = add("other", source="/models/other.gguf")
    settings.DJINN_MODEL = "/models/tiny"

    assert model_source(default_model) == "/models/tiny"
    assert model_source(other) == "/models/other.gguf"


def test_djinn_model_left_at_default_changes_nothing(settings, default_model):
    settings.DJINN_MODEL = "default"
    default_model.source = "/models/custom.gguf"

    assert model_source(default_model) == "/models/custom.gguf"


def test_only_one_model_can_be_default(default_model):
    with pytest.raises(Exception, match="one_default_model"):
        add("second", is_default=True)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"default_params": {"logit_bias": 1}}, "default_params"),
        ({"default_params": [1]}, "default_params"),
        ({"is_default": True, "enabled": False}, "enabled"),
    ],
)
def test_clean_refuses_bad_entries(fields, field):
    model = LLMModel(name="x", display_name="X", **fields)

    with pytest.raises(ValidationError) as error:
        model.clean()

    assert field in error.value.message_dict
