"""Settings of stock django-q2, the queue bench's baseline (``bench/queue_throughput.py``).

Nothing of medai: ``django_q`` alone on its own database (``DJQ_DATABASE_URL``), with its ORM
broker (``DJQ_BROKER=orm``) or its Redis broker (``DJQ_BROKER=redis``, ``DJQ_REDIS_URL``), its
defaults otherwise, two workers, every result kept (``save_limit`` 0) so completions can be
counted, and ``noop`` below as the task.
"""

from __future__ import annotations

import os

import dj_database_url

SECRET_KEY = "djq-bench-only"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "django_q"]
DATABASES = {"default": dj_database_url.parse(os.environ["DJQ_DATABASE_URL"])}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"]["OPTIONS"] = {"timeout": 30}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGGING_CONFIG = None

_BROKER = os.environ.get("DJQ_BROKER", "redis")
Q_CLUSTER: dict[str, object] = {
    "name": f"djqbench-{_BROKER}",
    "workers": int(os.environ.get("DJQ_WORKERS", "2")),
    "timeout": 60,
    "retry": 120,
    "save_limit": 0,
    "log_level": "WARNING",
}
if _BROKER == "orm":
    Q_CLUSTER["orm"] = "default"
else:
    Q_CLUSTER["redis"] = os.environ.get("DJQ_REDIS_URL", "redis://127.0.0.1:6379/5")


def noop(i: int) -> int:
    """The baseline's task: nothing, so the queue is what is measured."""
    return i
