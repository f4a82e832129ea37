"""A signed-in user's language follows them: the one chosen in Settings (``User.language``), on every device.

Runs after Django's LocaleMiddleware (which picked the browser's language from Accept-Language) and
AuthenticationMiddleware; a user who left the choice blank keeps the browser's language. LocaleMiddleware's
response half then names the language in ``Content-Language`` and varies the response on Accept-Language.

The APIs (``/api/``, ``/v1/``) always answer in English, whoever asks: their clients are programs that
expect the same messages every time, as OpenAI's do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar

from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase
from django.http import HttpRequest, HttpResponse
from django.utils import translation
from django.utils.deprecation import MiddlewareMixin

from config.errors import UNAVAILABLE_ERRORS, unavailable_response

logger = logging.getLogger(__name__)

API_PREFIXES = ("/api/", "/v1/")


class UserLanguageMiddleware(MiddlewareMixin):
    def process_request(self, request: HttpRequest) -> HttpResponse | None:
        if request.path.startswith(API_PREFIXES):
            translation.activate(settings.LANGUAGE_CODE)
            request.LANGUAGE_CODE = settings.LANGUAGE_CODE
            return None
        # Without a session cookie (a visitor, an API request with a key, a probe) this reads nothing; with one,
        # it loads the session and the user that the view reads anyway.
        try:
            user = request.user
            language = user.language if user.is_authenticated else ""
        except UNAVAILABLE_ERRORS as exc:
            # ServiceUnavailableMiddleware sees only what views raise: answer its 503 here, not a 500.
            logger.warning("Service unavailable for %s %s: %s", request.method, request.path, exc)
            return unavailable_response(request)
        if language:
            translation.activate(language)
            request.LANGUAGE_CODE = language
        return None


_current_session: ContextVar[SessionBase | None] = ContextVar("djinn_current_session", default=None)


def current_session_key() -> str | None:
    """The key of the session of the request being handled in this context (None outside a request, or for a
    request without one): the session a password change was made from, which stays signed in."""
    session = _current_session.get()
    return session.session_key if session is not None else None


class CurrentSessionMiddleware:
    """Makes the request's session known to code that has no request (model signals: conversations.sessions)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = _current_session.set(getattr(request, "session", None))
        try:
            return self.get_response(request)
        finally:
            _current_session.reset(token)
