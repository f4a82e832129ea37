"""DRF authentication by API key: ``Authorization: Bearer djn_...``.

A request with no Bearer header is left to the next class (the session). A Bearer header that is not a
working key fails with ``AuthenticationFailed`` coded ``invalid_api_key``, which the /v1 layer turns
into OpenAI's error JSON. ``request.auth`` is the ApiKey, so views can tell key requests from session
ones and name the key in usage records.
"""

from __future__ import annotations

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from accounts import selectors, services
from accounts.models import ApiKey, User

INVALID_API_KEY = "invalid_api_key"
INVALID_MESSAGE = "Incorrect API key provided. You can create and revoke keys in your Djinn settings, under API keys."


class ApiKeyAuthentication(BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[User, ApiKey] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword.lower().encode():
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                "Malformed Authorization header: expected 'Bearer <API key>'.", code=INVALID_API_KEY
            )
        try:
            key = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed(INVALID_MESSAGE, code=INVALID_API_KEY) from None
        api_key = selectors.api_key_authenticate(key=key)
        if api_key is None:
            raise exceptions.AuthenticationFailed(INVALID_MESSAGE, code=INVALID_API_KEY)
        services.api_key_mark_used(api_key=api_key)
        return api_key.user, api_key

    def authenticate_header(self, request: Request) -> str:
        # A WWW-Authenticate value makes DRF answer 401, not 403, when authentication fails or is missing.
        return self.keyword
