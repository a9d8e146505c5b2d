"""ASGI entry point: HTTP through Django, websockets through Channels (routes added by apps)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "medai.settings")

import django  # noqa: E402

django.setup(set_prefix=False)  # as django.core.asgi.get_asgi_application()

from apps.audit import credentials  # noqa: E402

# uvicorn's (and daphne's) loggers keep handlers of their own when the server configured logging
# after Django did (an in-process server, a --log-config): the filter on the logger covers them.
credentials.install("uvicorn.access", "uvicorn.error", "daphne.server", "daphne.http_protocol", "django.request")

from medai.handler import MedaiASGIHandler  # noqa: E402

# Django's ASGIHandler, minus the per-request thread where nothing needs it (medai/handler.py).
django_asgi_app = MedaiASGIHandler()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from medai.metrics import WebsocketGauge  # noqa: E402
from medai.routing import websocket_urlpatterns  # noqa: E402
from medai.ws_auth import JWTAuthMiddleware  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": WebsocketGauge(JWTAuthMiddleware(URLRouter(websocket_urlpatterns))),
    }
)
