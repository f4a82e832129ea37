"""/v1 in the OpenAPI schema, through the postprocessing hook conversations.openai_api.schema.add_openai_paths."""

from __future__ import annotations

import pytest
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.settings import patched_settings
from drf_spectacular.validation import validate_schema

from conversations.openai_api import schema as openai_schema

HOOKS = ["drf_spectacular.hooks.postprocess_schema_enums", "conversations.openai_api.schema.add_openai_paths"]


@pytest.fixture
def schema(db):
    with patched_settings({"POSTPROCESSING_HOOKS": HOOKS}):
        return SchemaGenerator().get_schema(request=None, public=True)


def test_the_hook_adds_the_v1_operations_to_a_valid_schema(schema):
    validate_schema(schema)
    assert schema["paths"]["/v1/models"]["get"]["operationId"] == "v1_models_list"
    assert "/v1/models/{model}" in schema["paths"]
    operation = schema["paths"]["/v1/chat/completions"]["post"]
    assert set(operation["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    assert "/api/v1/keys" in schema["paths"]  # the generated part is kept


def test_v1_operations_use_the_api_key_scheme_the_schema_defines(schema):
    assert "ApiKeyAuth" in schema["components"]["securitySchemes"]
    for path in openai_schema.PATHS:
        for operation in schema["paths"][path].values():
            assert operation["security"] == [{"ApiKeyAuth": []}]


def test_the_v1_components_take_no_name_the_generated_schema_uses(db):
    with patched_settings({"POSTPROCESSING_HOOKS": HOOKS[:1]}):  # the generated part alone
        generated = SchemaGenerator().get_schema(request=None, public=True)

    assert not set(openai_schema.COMPONENTS) & set(generated["components"]["schemas"])
