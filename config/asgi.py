"""ASGI entry point: HTTP goes to Django (config.asgi_handler), WebSockets through Channels (session auth,
origin check)."""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup(set_prefix=False)  # before importing anything that touches models (as get_asgi_application does)

from config.asgi_handler import DjinnASGIHandler  # noqa: E402

django_asgi_app = DjinnASGIHandler()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from config.routing import websocket_urlpatterns  # noqa: E402
from inference.runtime import warm_up_in_background  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)

# The first message would otherwise wait seconds while the model's tokenizer is read (to check context).
warm_up_in_background()
