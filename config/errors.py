"""Error answers that must not depend on what failed: a request too large to read, and a dependency that is
unreachable. Each is shaped for whoever asked: OpenAI's error JSON under /v1, ``{"detail", "code"}`` under
/api, a page otherwise (rendered with no request context: the session or the database may be what failed).

A PostgreSQL or Redis that cannot be reached is a 503 with ``Retry-After``, answered as soon as the connect
or pool timeout runs out (DATABASE_CONNECT_TIMEOUT_S, DATABASE_POOL_TIMEOUT_S), never a 500 after a hang.
:class:`ServiceUnavailableMiddleware` turns such an error raised by a view into that answer, and the
500 handler (``accounts.views.server_error``) does the same for one raised anywhere else in the chain.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import redis
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.template import loader
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _
from django_redis.exceptions import ConnectionInterrupted

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 5
# In the language of the request where one was chosen (a 413 is answered before that: in the default language).
UNAVAILABLE = _("Djinn cannot reach its database or cache right now. Please try again in a few seconds.")
TOO_LARGE = _("The request body is too large.")

# What an unreachable PostgreSQL (or an exhausted pool) or Redis raises.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    redis.ConnectionError,
    redis.TimeoutError,
    ConnectionInterrupted,
)


def is_unavailable(exc: BaseException | None) -> bool:
    return isinstance(exc, UNAVAILABLE_ERRORS)


def error_body(path: str, status: int, message: str | Promise, code: str) -> tuple[bytes, str]:
    """The body and content type of an error answer for a request to ``path``."""
    message = str(message)
    if path.startswith("/v1/"):
        kind = "server_error" if status >= 500 else "invalid_request_error"
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        return json.dumps(body).encode(), "application/json"
    if path.startswith("/api/"):
        return json.dumps({"detail": message, "code": code}).encode(), "application/json"
    page = loader.render_to_string(f"errors/{status}.html", {"message": message})
    return page.encode(), "text/html; charset=utf-8"


def unavailable_response(request: HttpRequest) -> HttpResponse:
    body, content_type = error_body(request.path, 503, UNAVAILABLE, "service_unavailable")
    response = HttpResponse(body, content_type=content_type, status=503)
    response["Retry-After"] = str(RETRY_AFTER_S)
    return response


class ServiceUnavailableMiddleware:
    """A view that could not reach PostgreSQL or Redis answers 503 with Retry-After (see the module)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_unavailable(exception):
            return None
        logger.warning("Service unavailable for %s %s: %s", request.method, request.path, exception)
        return unavailable_response(request)
