"""ASGI entry point: HTTP through Django, websockets through Channels (routes added by apps)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "medai.settings")

import logging

import django

# uvicorn --no-access-log (its logging is configured before it imports this module) leaves
# "uvicorn.access" with no handler and propagate off. Django's LOGGING names "uvicorn", and
# dictConfig resets the children of a logger it names (propagate back on), which turned the
# access log on again through "uvicorn"'s handler: a JSON line per request, ~7% of the web
# process's CPU under load (bench/README.md). Keep it off when the server said off.
_access = logging.getLogger("uvicorn.access")
_access_off = not _access.handlers and not _access.propagate

django.setup(set_prefix=False)  # as django.core.asgi.get_asgi_application()

if _access_off:
    _access.propagate = False

from apps.audit import credentials  # noqa: E402
from apps.audit.logging import RedactionFilter  # noqa: E402

# uvicorn's (and daphne's) loggers keep handlers of their own when the server configured logging
# after Django did (an in-process server, a --log-config): the filter on the logger covers them.
credentials.install(
    "uvicorn.access",
    "uvicorn.error",
    "daphne.server",
    "daphne.http_protocol",
    "django.request",
    filter_class=RedactionFilter,
)

from medai.handler import MedaiASGIHandler  # noqa: E402
from medai.limits import RequestLimits  # noqa: E402

# Django's ASGIHandler, minus the per-request thread where nothing needs it (medai/handler.py),
# behind the body size and content-type limits that must act before it reads a body (medai/limits.py).
django_asgi_app = RequestLimits(MedaiASGIHandler())

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from apps.audit.context import CorrelationScope  # noqa: E402
from medai.metrics import WebsocketGauge  # noqa: E402
from medai.routing import websocket_urlpatterns  # noqa: E402
from medai.ws_auth import JWTAuthMiddleware  # noqa: E402

# Each request and websocket connection has its correlation id from its first byte to its last:
# the access log line, a streamed body and a consumer's work log it too (apps/audit/context.py).
application = CorrelationScope(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": WebsocketGauge(JWTAuthMiddleware(URLRouter(websocket_urlpatterns))),
        }
    )
)

# Everything loaded so far (Django, the apps, every view: imported now rather than by the first
# request) lives as long as the process. Freezing it keeps the cyclic garbage collector from
# scanning it again in each full collection: those scans were the long pauses behind a p99 4-5x
# the median with 16 requests in flight (bench/README.md, "Waiting for a slot").
import gc  # noqa: E402

from django.urls import get_resolver  # noqa: E402

get_resolver().url_patterns  # noqa: B018 - imports the URLconf and so every view
gc.collect()
gc.freeze()
