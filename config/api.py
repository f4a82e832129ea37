"""The API's documentation: the OpenAPI schema (/api/schema/), Swagger UI (/api/docs/) and the developer page.

Swagger UI's files come from drf-spectacular-sidecar through our own static files, so the docs work
with no access to a CDN. The developer page lives here, not in accounts, because it names the model
being served and accounts must not depend on inference.
"""

from __future__ import annotations

from csp.decorators import csp_update
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path
from django.views.decorators.http import require_http_methods
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from inference import registry
from inference.models import LLMModel


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Shows accounts.authentication.ApiKeyAuthentication in the schema as HTTP Bearer auth."""

    target_class = "accounts.authentication.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "djn_<8 characters>_<40 characters>",
            "description": "An API key from Settings → API keys.",
        }


@login_required
@require_http_methods(["GET"])
def developers(request: HttpRequest) -> HttpResponse:
    """Copy-paste examples (openai SDK, curl) filled in with this site's address and the default model."""
    try:
        model_name = registry.model_get(None).name
    except LLMModel.DoesNotExist:
        model_name = "default"
    context = {
        "section": "developers",
        "api_base_url": request.build_absolute_uri("/v1"),
        "docs_url": request.build_absolute_uri("/api/docs/"),
        "model_name": model_name,
    }
    return render(request, "accounts/settings/developers.html", context)


urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="api_schema"),
    # The split view serves Swagger UI's start-up script as a file of its own: no inline script (CSP). Swagger
    # UI sets inline styles as it draws, so this page alone allows them; scripts stay strict.
    path(
        "docs/",
        csp_update({"style-src": ["'self'", "'unsafe-inline'"]})(
            SpectacularSwaggerSplitView.as_view(url_name="api_schema")
        ),
        name="api_docs",
    ),
]
