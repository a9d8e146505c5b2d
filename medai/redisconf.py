"""How every Redis client of medai connects: the timeouts in one place (settings.py calls these).

redis-py 8 reads every reply with a 5 s ``socket_timeout`` by default (it was unbounded before).
That is right for normal commands, wrong for blocking ones: channels_redis receives a websocket's
messages with ``BZPOPMIN`` blocking up to ``brpop_timeout`` (5 s) on the server, so an idle socket's
read waited the whole block and lost the race to the client's 5 s timeout: ``TimeoutError`` inside
``await_many_dispatch``, the consumer died and uvicorn dropped the websocket without a close frame
every 5-10 s. The rule here: a client that issues a blocking command reads with the block plus the
normal timeout, so a healthy server always answers first; normal commands keep a short timeout,
so nothing hangs for long when Redis is gone (a command then fails within the connect timeout
and its retries, and the caller answers 503).
"""

from __future__ import annotations

from typing import Any


def client_options(
    *, socket_timeout: float, connect_timeout: float, health_check_interval: float, blocking: float = 0.0
) -> dict[str, Any]:
    """Connection options for a redis-py client or pool. ``blocking``: the longest time a blocking
    command of this client waits on the server (BLPOP, BZPOPMIN timeout), added to the read timeout."""
    return {
        "socket_timeout": socket_timeout + blocking,
        "socket_connect_timeout": connect_timeout,
        # An idle pooled connection is checked (PING) before reuse: one to a restarted server is
        # replaced at once instead of failing the command that picked it.
        "health_check_interval": health_check_interval,
    }


def cache_config(url: str, *, prefix: str, options: dict[str, Any]) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
            "KEY_PREFIX": prefix,
            "TIMEOUT": 300,
            "OPTIONS": dict(options),
        }
    }


def channel_layers_config(
    url: str,
    *,
    prefix: str,
    socket_timeout: float,
    connect_timeout: float,
    health_check_interval: float,
    receive_block: float = 5.0,
    group_expiry: int = 86_400,
) -> dict[str, Any]:
    """CHANNEL_LAYERS for medai's channel layer (``medai.channel_layer``): its receive blocks
    ``receive_block`` seconds, and its connections read for that plus ``socket_timeout``."""
    host = {
        "address": url,
        **client_options(
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
            health_check_interval=health_check_interval,
            blocking=receive_block,
        ),
    }
    return {
        "default": {
            "BACKEND": "medai.channel_layer.RedisChannelLayer",
            "CONFIG": {"hosts": [host], "prefix": prefix, "receive_block": receive_block, "group_expiry": group_expiry},
        }
    }
