"""WebSocket routes (config/asgi.py wraps them in the session-auth and origin-check middleware)."""

from __future__ import annotations

from django.urls import path

from conversations.consumers import ChatConsumer

websocket_urlpatterns = [
    path("ws/chat/", ChatConsumer.as_asgi()),
]
