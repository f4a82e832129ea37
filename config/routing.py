"""WebSocket routes. The chat consumer arrives with the conversations app."""

from __future__ import annotations

websocket_urlpatterns: list = []
