"""Which model answers: reads of the admin-editable registry, plus the DJINN_MODEL override."""

from __future__ import annotations

from django.conf import settings
from django.db.models import QuerySet

from inference.models import LLMModel

NO_OVERRIDE = {"", "default"}


def model_list_enabled() -> QuerySet[LLMModel]:
    """Enabled models, the default first."""
    return LLMModel.objects.filter(enabled=True).order_by("-is_default", "name")


def model_get(name: str | None) -> LLMModel:
    """The enabled model called ``name``, or with None (or "") the default one.

    When no entry is marked default, the first enabled model by name answers, so unticking the box in
    the admin does not stop the chat. Raises LLMModel.DoesNotExist for an unknown or disabled name, or
    when no model is enabled at all.
    """
    if name:
        return LLMModel.objects.get(name=name, enabled=True)
    model = model_list_enabled().first()
    if model is None:
        raise LLMModel.DoesNotExist("No model is enabled.")
    return model


def model_source(model: LLMModel) -> str:
    """Where the model's weights are (a .gguf file, a Hugging Face folder, or "" for the bundled model).

    DJINN_MODEL, unless left at "default", replaces the default entry's source: a path, or an alias of the
    bundled model such as "smollm2". Tests point it at a tiny random model this way.
    """
    override = settings.DJINN_MODEL.strip()
    if model.is_default and override.lower() not in NO_OVERRIDE:
        return override
    return model.source
