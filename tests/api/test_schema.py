"""OpenAPI schema at /api/schema/ and Swagger UI at /api/docs/, its files served by Djinn itself."""

from __future__ import annotations

import re

import yaml
from drf_spectacular.validation import validate_schema


def test_the_schema_is_a_valid_openapi_3_document(client, db):
    response = client.get("/api/schema/")

    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    validate_schema(schema)  # raises on anything that breaks the OpenAPI 3 specification
    assert schema["openapi"].startswith("3.")
    assert "/api/v1/keys" in schema["paths"]


def test_the_schema_is_served_as_json_when_asked(client, db):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    assert response.json()["info"]["title"] == "Djinn API"


def test_the_schema_names_bearer_api_keys_as_the_way_to_authenticate(client, db):
    schema = yaml.safe_load(client.get("/api/schema/").content)

    assert schema["components"]["securitySchemes"]["ApiKeyAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "djn_<8 characters>_<40 characters>",
        "description": "An API key from Settings → API keys.",
    }
    assert {"ApiKeyAuth": []} in schema["paths"]["/api/v1/keys"]["get"]["security"]


def test_every_number_swagger_would_send_for_try_it_out_survives_javascript(client, db):
    # Swagger UI fills "Try it out" from a field's example, else from its bounds; JavaScript numbers are exact
    # only up to 2**53, so 2**63 - 1 (a seed's maximum) went out as 2**63 and the request was refused.
    schema = yaml.safe_load(client.get("/api/schema/").content)
    sampling = schema["components"]["schemas"]["SamplingParamsInputRequest"]["properties"]

    unsafe = {name for name, field in sampling.items() if name != "stop" and field.get("maximum", 0) > 2**53}

    assert unsafe == {"seed"}
    assert all(abs(sampling[name]["example"]) <= 2**53 for name in unsafe)


def test_the_docs_page_loads_swagger_ui_from_this_site_not_a_cdn(client, db):
    response = client.get("/api/docs/")

    assert response.status_code == 200
    page = response.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in assets
    assert all(asset.startswith("/") and not asset.startswith("//") for asset in assets), assets
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
    # Its start-up script is a file of its own (no inline script: the Content-Security-Policy allows none).
    assert "<script>" not in page
    assert "/api/schema/" in client.get("/api/docs/?script=").content.decode()
