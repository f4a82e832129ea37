"""API-key routes, included under /api/v1/ by config/urls.py."""

from __future__ import annotations

from django.urls import path

from accounts.api import views

urlpatterns = [
    path("keys", views.ApiKeyListCreateApi.as_view(), name="api_keys"),
    path("keys/<str:api_key_id>", views.ApiKeyRevokeApi.as_view(), name="api_key_revoke"),
]
