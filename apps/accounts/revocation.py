"""Tell a user's open websockets that their credentials may have changed.

Every authenticated socket joins ``auth.user.<id>`` (apps/accounts/websocket.py). A verb that may
revoke a credential (logout, a key revoked or rotated, a password change, a deactivation, a
removal from a location, a location closed, a break-glass grant ended) calls ``notify`` inside its
transaction; on commit one ``auth.changed`` event goes to each concerned user's group, and each
socket there checks its own credential again against the database, closing with 4401 if it no
longer holds. Checking again instead of matching what was revoked keeps one rule for every cause
(the check is ``authenticate_bearer`` itself), at one query per open socket of that user per
event: revocations are rare.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger("medai.auth")

EVENT = "auth.changed"


def group(user_id: int) -> str:
    return f"auth.user.{user_id}"


def _send(user_ids: list[int]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        for user_id in user_ids:
            async_to_sync(layer.group_send)(group(user_id), {"type": EVENT})
    except Exception as exc:  # noqa: BLE001 - Redis down: the sockets' expiry timers still hold
        logger.warning("credential change not pushed to websockets: %s", type(exc).__name__)


def notify(*user_ids: int) -> None:
    notify_many(user_ids)


def notify_many(user_ids: Iterable[int]) -> None:
    """On commit, ask the open sockets of these users to check their credentials again."""
    ids = sorted({int(u) for u in user_ids if u})
    if ids:
        transaction.on_commit(lambda: _send(ids))
