"""/api/v1/keys: list, create and revoke the requesting user's API keys.

Listing and revoking take a session or an API key; creating takes a signed-in session only: a key that leaked
must not be able to mint others that outlive its revocation (or get around two-factor sign-in)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import selectors, services
from accounts.api.serializers import (
    ApiKeyCreatedOutputSerializer,
    ApiKeyCreateInputSerializer,
    ApiKeyOutputSerializer,
    ErrorOutputSerializer,
)
from accounts.models import ApiKey

KEYS_NEED_A_SESSION = (
    "API keys are created in a signed-in session (Settings, API keys, or this endpoint from the browser), "
    "not with an API key."
)
UNAUTHENTICATED = OpenApiResponse(ErrorOutputSerializer, description="No credentials, or not a working API key.")


class ApiKeyListCreateApi(APIView):
    @extend_schema(
        operation_id="api_keys_list",
        tags=["API keys"],
        responses={200: ApiKeyOutputSerializer(many=True), 401: UNAUTHENTICATED},
    )
    def get(self, request: Request) -> Response:
        api_keys = selectors.api_key_list(user=request.user)
        return Response(ApiKeyOutputSerializer(api_keys, many=True).data)

    @extend_schema(
        operation_id="api_keys_create",
        tags=["API keys"],
        request=ApiKeyCreateInputSerializer,
        responses={
            201: ApiKeyCreatedOutputSerializer,
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="Invalid input: field name to a list of errors."),
            401: UNAUTHENTICATED,
            403: OpenApiResponse(ErrorOutputSerializer, description="Asked with an API key: sign in instead."),
        },
    )
    def post(self, request: Request) -> Response:
        if isinstance(request.auth, ApiKey):
            raise PermissionDenied(KEYS_NEED_A_SESSION)
        serializer = ApiKeyCreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        api_key, key = services.api_key_create(user=request.user, **serializer.validated_data)
        # The whole key goes out in this response only; ApiKeyCreatedOutputSerializer documents the shape.
        return Response({**ApiKeyOutputSerializer(api_key).data, "key": key}, status=status.HTTP_201_CREATED)


class ApiKeyRevokeApi(APIView):
    @extend_schema(
        operation_id="api_keys_revoke",
        tags=["API keys"],
        request=None,
        responses={
            204: OpenApiResponse(description="Revoked: the key stops working at once."),
            401: UNAUTHENTICATED,
            404: OpenApiResponse(ErrorOutputSerializer, description="Not one of your working keys."),
        },
    )
    def delete(self, request: Request, api_key_id: str) -> Response:
        # Any path segment reaches this view, so a malformed id is a JSON 404 like an unknown one.
        if not api_key_id.isdigit():
            raise NotFound("No such API key.")
        try:
            api_key = selectors.api_key_get(user=request.user, api_key_id=int(api_key_id))
        except ApiKey.DoesNotExist:
            raise NotFound("No such API key.") from None
        services.api_key_revoke(api_key=api_key)
        return Response(status=status.HTTP_204_NO_CONTENT)
