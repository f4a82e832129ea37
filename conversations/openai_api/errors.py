"""OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}`` with the matching HTTP status.

The SDK picks its exception class by status (400 BadRequestError, 401 AuthenticationError, 404
NotFoundError, ...) and exposes ``code`` and ``param``, so both must be what OpenAI would send.
"""

from __future__ import annotations

from django.http import JsonResponse

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"


class OpenAIError(Exception):
    """Raised anywhere under a /v1 view; the view wrapper renders it."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type: str = INVALID_REQUEST,
        param: str | None = None,
        code: str | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s  # sent as Retry-After (the SDK waits that long before retrying)
        self.message = message
        self.status = status
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, dict[str, str | None]]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JsonResponse:
        return JsonResponse(self.body(), status=self.status)


def invalid_type(param: str, expected: str, value: object) -> OpenAIError:
    return OpenAIError(
        f"Invalid type for '{param}': expected {expected}, but got {_json_type(value)} instead.",
        param=param,
        code="invalid_type",
    )


def invalid_value(param: str, message: str) -> OpenAIError:
    return OpenAIError(message, param=param, code="invalid_value")


def missing(param: str) -> OpenAIError:
    return OpenAIError(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


def unsupported(param: str, message: str | None = None) -> OpenAIError:
    return OpenAIError(
        message or f"Unsupported parameter: '{param}' is not supported by Djinn.",
        param=param,
        code="unsupported_parameter",
    )


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
