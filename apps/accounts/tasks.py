"""django-q2 entry points of accounts (thin: they call a service)."""

from __future__ import annotations

from apps.accounts import services


def purge_expired_tokens() -> int:
    """Hourly (migration 0005): revocation and blacklist rows of tokens that expired anyway."""
    return services.purge_expired_tokens()
