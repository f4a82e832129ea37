"""/v1 in the OpenAPI schema (/api/schema/). The /v1 views are plain async Django views, which
drf-spectacular does not see, so their part of the schema is written here and merged in by a
postprocessing hook::

    SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"] = [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "conversations.openai_api.schema.add_openai_paths",
    ]

It describes Djinn's subset of OpenAI's API; OpenAI's own reference has the full story of each field.
"""

from __future__ import annotations

from typing import Any

from conversations.openai_api.validation import MAX_CHOICES, MAX_STOP_SEQUENCES, RANGES

TAG = "OpenAI-compatible (/v1)"
SECURITY = [{"ApiKeyAuth": []}]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


def _sampling(name: str) -> dict[str, Any]:
    """A sampling parameter's schema: its /v1 range (validation.RANGES, from the engine's)."""
    return _nullable(RANGES[name].json_schema())


def _errors(*statuses: int) -> dict[str, Any]:
    descriptions = {
        400: "Invalid request (`code`: invalid_type, invalid_value, missing_required_parameter, "
        "unsupported_parameter, unknown_parameter, invalid_json, context_length_exceeded); `param` names "
        "the parameter.",
        401: "Missing or invalid API key (`code`: invalid_api_key).",
        403: "The account may not use the API yet (e-mail address not verified).",
        404: "Unknown or disabled model, or one the plan does not include (`code`: model_not_found).",
        429: "Over a limit of the plan (`code`: rate_limit_exceeded for requests or tokens per minute and replies "
        "at once, insufficient_quota for the monthly tokens); `Retry-After` says when to try again, in seconds.",
        503: "No worker could serve the request in time.",
    }
    return {
        str(status): {"description": descriptions[status], "content": {"application/json": {"schema": _ref("V1Error")}}}
        for status in statuses
    }


MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "developer", "user", "assistant"]},
        "content": {
            "oneOf": [
                {"type": "string"},
                {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["type", "text"],
                        "properties": {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}},
                    },
                },
            ]
        },
        "name": {"type": "string", "description": "Accepted and ignored."},
    },
}

USAGE = {
    "type": "object",
    "properties": {
        "prompt_tokens": {"type": "integer"},
        "completion_tokens": {"type": "integer"},
        "total_tokens": {"type": "integer"},
        "prompt_tokens_details": {
            "type": "object",
            "properties": {
                "cached_tokens": {"type": "integer", "description": "Prompt tokens served from the prefix cache."}
            },
        },
    },
}

LOGPROBS = _nullable(
    {
        "type": "object",
        "properties": {
            "content": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "token": {"type": "string"},
                        "logprob": {"type": "number"},
                        "bytes": {"type": "array", "items": {"type": "integer"}},
                        "top_logprobs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "token": {"type": "string"},
                                    "logprob": {"type": "number"},
                                    "bytes": {"type": "array", "items": {"type": "integer"}},
                                },
                            },
                        },
                    },
                },
            },
            "refusal": _nullable({"type": "string"}),
        },
    }
)

COMPONENTS: dict[str, Any] = {
    "V1Error": {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string", "enum": ["invalid_request_error", "server_error"]},
                    "param": _nullable({"type": "string"}),
                    "code": _nullable({"type": "string"}),
                },
            }
        },
    },
    "V1Model": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["model"]},
            "created": {"type": "integer", "description": "Unix time, seconds."},
            "owned_by": {"type": "string"},
        },
    },
    "V1ModelList": {
        "type": "object",
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": _ref("V1Model")},
        },
    },
    "V1ChatCompletionRequest": {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": {"type": "string", "description": "An id from GET /v1/models."},
            "messages": {"type": "array", "minItems": 1, "items": MESSAGE},
            "stream": _nullable({"type": "boolean"}),
            "stream_options": _nullable({"type": "object", "properties": {"include_usage": {"type": "boolean"}}}),
            "max_tokens": _sampling("max_tokens"),
            "max_completion_tokens": _sampling("max_tokens"),
            "temperature": _sampling("temperature"),
            "top_p": _sampling("top_p"),
            "stop": _nullable(
                {
                    "oneOf": [
                        {"type": "string"},
                        {"type": "array", "items": {"type": "string"}, "maxItems": MAX_STOP_SEQUENCES},
                    ]
                }
            ),
            "seed": _sampling("seed"),
            "presence_penalty": _sampling("presence_penalty"),
            "frequency_penalty": _sampling("frequency_penalty"),
            "n": _nullable({"type": "integer", "minimum": 1, "maximum": MAX_CHOICES}),
            "logprobs": _nullable({"type": "boolean"}),
            "top_logprobs": _sampling("top_logprobs"),
            "user": _nullable({"type": "string", "description": "Accepted and ignored."}),
            "top_k": _sampling("top_k"),
            "min_p": _sampling("min_p"),
            "repetition_penalty": _sampling("repetition_penalty"),
        },
    },
    "V1ChatCompletion": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["chat.completion"]},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "system_fingerprint": _nullable({"type": "string"}),
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "index": {"type": "integer"},
                        "message": {
                            "type": "object",
                            "properties": {
                                "role": {"type": "string", "enum": ["assistant"]},
                                "content": {"type": "string"},
                                "refusal": _nullable({"type": "string"}),
                            },
                        },
                        "logprobs": LOGPROBS,
                        "finish_reason": {"type": "string", "enum": ["stop", "length", "cancelled"]},
                    },
                },
            },
            "usage": USAGE,
        },
    },
    "V1ChatCompletionChunk": {
        "type": "object",
        "description": "One server-sent event (`data: <chunk>`); the stream ends with `data: [DONE]`.",
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["chat.completion.chunk"]},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "index": {"type": "integer"},
                        "delta": {
                            "type": "object",
                            "properties": {"role": {"type": "string"}, "content": {"type": "string"}},
                        },
                        "logprobs": LOGPROBS,
                        "finish_reason": _nullable({"type": "string"}),
                    },
                },
            },
            "usage": _nullable(USAGE),
        },
    },
}

PATHS: dict[str, Any] = {
    "/v1/models": {
        "get": {
            "operationId": "v1_models_list",
            "summary": "The enabled models",
            "tags": [TAG],
            "security": SECURITY,
            "responses": {
                "200": {"description": "", "content": {"application/json": {"schema": _ref("V1ModelList")}}},
                **_errors(401),
            },
        }
    },
    "/v1/models/{model}": {
        "get": {
            "operationId": "v1_models_retrieve",
            "summary": "One enabled model",
            "tags": [TAG],
            "security": SECURITY,
            "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {
                "200": {"description": "", "content": {"application/json": {"schema": _ref("V1Model")}}},
                **_errors(401, 404),
            },
        }
    },
    "/v1/chat/completions": {
        "post": {
            "operationId": "v1_chat_completions_create",
            "summary": "A chat completion, whole or streamed",
            "description": "OpenAI's wire format: use the official openai SDK with base_url=<host>/v1. With "
            "`stream` the answer is `text/event-stream`: the first chunk of each choice carries "
            "`delta.role`, the last one its `finish_reason`, then (with "
            "`stream_options.include_usage`) one chunk with no choices and the usage, then `data: [DONE]`.",
            "tags": [TAG],
            "security": SECURITY,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("V1ChatCompletionRequest")}},
            },
            "responses": {
                "200": {
                    "description": "",
                    "content": {
                        "application/json": {"schema": _ref("V1ChatCompletion")},
                        "text/event-stream": {"schema": _ref("V1ChatCompletionChunk")},
                    },
                },
                **_errors(400, 401, 403, 404, 429, 503),
            },
        }
    },
}


def add_openai_paths(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: add /v1's paths and components to the generated schema."""
    result.setdefault("paths", {}).update(PATHS)
    result.setdefault("components", {}).setdefault("schemas", {}).update(COMPONENTS)
    return result
