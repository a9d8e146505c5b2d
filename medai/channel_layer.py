"""channels_redis' channel layer with its blocking receive made a setting and checked against the
socket timeout (medai/redisconf.py says why: a receive that blocks as long as the client may read
raises ``TimeoutError`` on every idle websocket).

``CONFIG``: channels_redis' own keys, plus ``receive_block`` (seconds ``BZPOPMIN`` waits on the
server, default 5, channels_redis' ``brpop_timeout``). Every host's ``socket_timeout`` must exceed
it; a configuration that breaks that rule does not start.

Outages: every websocket of a process shares one ``BZPOPMIN`` loop, so when Redis goes away only
the consumer that holds it sees the error, and the others may find a restarted, empty Redis (their
group memberships gone) and wait forever for messages that no longer reach them. So a failed
receive is announced to every consumer waiting in this process (``outage()``): each closes its
socket with 1013 (try again later) and its client reconnects, rejoining its groups.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from channels_redis.core import RedisChannelLayer as _RedisChannelLayer
from django.core.exceptions import ImproperlyConfigured
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError


def _default_socket_timeout() -> float | None:
    """redis-py's default read timeout (5 s in redis-py 8; None, unbounded, before)."""
    default = inspect.signature(AbstractConnection.__init__).parameters["socket_timeout"].default
    return None if default is inspect.Parameter.empty else default


class RedisChannelLayer(_RedisChannelLayer):
    def __init__(self, *args: Any, receive_block: float = 5.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if receive_block <= 0:
            raise ImproperlyConfigured("CHANNEL_LAYERS receive_block must be positive")
        self.brpop_timeout = receive_block
        self._outage_waiters: set[asyncio.Future[None]] = set()
        for host in self.hosts:
            timeout = host.get("socket_timeout", _default_socket_timeout())
            if timeout is not None and timeout <= receive_block:
                raise ImproperlyConfigured(
                    f"CHANNEL_LAYERS: socket_timeout {timeout}s must exceed the blocking receive of "
                    f"{receive_block}s, or every idle websocket dies with TimeoutError"
                )

    def read_timeouts(self) -> dict[str, float | None]:
        """The timeouts a websocket's receive runs under (tests check a hold outlasts them)."""
        socket_timeouts = [h.get("socket_timeout", _default_socket_timeout()) for h in self.hosts]
        return {
            "receive_block": self.brpop_timeout,
            "socket_timeout": max((t for t in socket_timeouts if t is not None), default=None),
            "health_check_interval": max(float(h.get("health_check_interval", 0)) for h in self.hosts),
        }

    async def receive_single(self, channel: str) -> Any:
        try:
            return await super().receive_single(channel)
        except (RedisError, OSError):
            self._announce_outage()
            raise

    def outage(self) -> asyncio.Future[None]:
        """A future on the running loop, resolved at the next failed receive of this process."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outage_waiters.add(future)
        future.add_done_callback(self._outage_waiters.discard)
        return future

    def _announce_outage(self) -> None:
        for future in list(self._outage_waiters):
            loop = future.get_loop()
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
