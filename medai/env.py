"""Typed environment helpers for settings: each fails loudly on a bad value.

Modelled on healthchecks' ``hc/settings.py``: a setting is read once, converted, and a value that
cannot be converted stops the process with the variable's name instead of surfacing later.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


# The local llama.cpp server's port: the launcher reads it before the settings exist, the
# settings (MEDAI_LLAMA_PORT) for everyone else; one default for both.
DEFAULT_LLAMA_PORT = 8081
# The bundled embeddings server's port (a second llama-server, started with --embeddings): likewise.
DEFAULT_EMBED_PORT = 8082


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def envbool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def envint(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {value}")
    return value


def envfloat(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None


def envlist(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def envsecret(name: str, environ: Mapping[str, str] | None = None) -> str:
    """A secret from the file named by ``NAME_FILE`` (Docker/K8s secrets) or from ``NAME``; "" if
    neither is set. There is deliberately no default: medai/secrets.py decides what a missing
    secret means (generated in development and test, refused anywhere else)."""
    environ = os.environ if environ is None else environ
    path = environ.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={path!r} cannot be read: {exc.strerror}") from None
    return environ.get(name, "").strip()
