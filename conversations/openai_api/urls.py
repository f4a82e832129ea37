"""Routes under /v1/. Anything else under /v1/ is OpenAI's 404 JSON, not a Django page."""

from __future__ import annotations

from django.urls import re_path

from conversations.openai_api import views

app_name = "openai_api"

urlpatterns = [
    re_path(r"^models/?$", views.models, name="models"),
    re_path(r"^models/(?P<model_id>[^/]+)/?$", views.model, name="model"),
    re_path(r"^chat/completions/?$", views.chat_completions, name="chat_completions"),
    re_path(r"^.*$", views.not_found, name="not_found"),
]
