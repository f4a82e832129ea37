"""A signed-in user's language follows them: the one chosen in Settings (``User.language``), on every device.

Runs after Django's LocaleMiddleware (which picked the browser's language from Accept-Language) and
AuthenticationMiddleware; a user who left the choice blank keeps the browser's language. LocaleMiddleware's
response half then names the language in ``Content-Language`` and varies the response on Accept-Language.

The APIs (``/api/``, ``/v1/``) always answer in English, whoever asks: their clients are programs that
expect the same messages every time, as OpenAI's do.
"""

from __future__ import annotations

import logging

from django.conf import settings
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
