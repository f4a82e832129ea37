"""The model registry: which LLMs this Djinn serves, editable in the admin."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models

from inference.engine import SAMPLING_RANGES

# Keys of default_params a model entry may set: the engine's numeric sampling parameters, but for those that only
# make sense per request.
PARAM_KEYS = tuple(name for name in SAMPLING_RANGES if name not in {"seed", "top_logprobs"})


class LLMModel(models.Model):
    name = models.SlugField(max_length=100, unique=True, help_text='What the API calls "model".')
    display_name = models.CharField(max_length=200)
    source = models.CharField(
        max_length=500,
        blank=True,
        help_text="Blank for the bundled default model; else a path to a .gguf file or a Hugging Face folder.",
    )
    default_params = models.JSONField(
        default=dict, blank=True, help_text='Sampling defaults, e.g. {"temperature": 0.7, "max_tokens": 1024}.'
    )
    context_length = models.PositiveIntegerField(default=0, help_text="Tokens; 0 means the model's own.")
    enabled = models.BooleanField(default=True)
    is_default = models.BooleanField(default=False, help_text="Answers when a request names no model.")
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-is_default", "name"]
        verbose_name = "LLM model"
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"], condition=models.Q(is_default=True), name="one_default_model"
            )
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if not isinstance(self.default_params, dict):
            raise ValidationError({"default_params": "Must be a JSON object."})
        unknown = sorted(set(self.default_params) - set(PARAM_KEYS))
        if unknown:
            raise ValidationError({"default_params": f"Unknown keys {unknown}; allowed: {', '.join(PARAM_KEYS)}."})
        if self.is_default and not self.enabled:
            raise ValidationError({"enabled": "The default model must be enabled."})
