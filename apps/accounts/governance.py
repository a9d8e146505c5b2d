"""Governance of inference: rate limits and quotas (issue 10). The pipeline's hooks, no-ops today.

The pipeline (apps/inference/pipeline/) calls these at fixed points of every request to a model,
whatever the entry point (chat, stream, the async API, batches), so governance fills them in
here and nowhere else:

    authenticate → authorize → validate → **rate limit** → **quota reserve** → route → admit
    → dispatch → **reconcile** → audit → metrics

Contracts (plain values in, plain values out; accounts imports nothing of gpu or inference):

* ``check_rate_limit(principal, action=, units=, ip=)`` once per HTTP request (a batch is one
  request of ``units`` items). Returns a ``RateLimit`` whose ``headers`` the response carries
  (``X-RateLimit-*``); raises ``LimitExceeded`` (429 with ``Retry-After``) when over a bucket.
* ``reserve(principal, action=, model=, requests=, max_tokens=, ref=)`` after validation, before
  any backend is chosen: reserves requests and tokens against the organization's and location's
  quotas atomically, returns a ``Reservation``; raises ``LimitExceeded`` (429) when the quota
  cannot cover it. ``ref`` names what the reservation is for when another process will settle it
  (the async API: the batch or task id), so ``reservation_for`` can find it again.
* ``reconcile(reservation, prompt_tokens=, completion_tokens=, completed=)`` exactly once per
  reservation and per inference: the real usage replaces the reservation (zero usage when the
  request never reached a model: refused, failed, cancelled). It must not raise: a request that was
  answered stays answered.

For sync chat the first two run on the web process's event loop: they must not query the
database (answer from this process's memory or one quick Redis round trip). None of them writes
an audit event: the inference's own event (apps/inference/auditing.py) is the record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from apps.accounts.services import Principal

CHAT = "chat"  # the action of a chat completion, sync or async


class LimitExceeded(Exception):
    """A rate limit or quota refuses this request: answers 429 with ``Retry-After``."""

    def __init__(self, code: str, message: str, retry_after: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.retry_after = code, message, retry_after
        self.headers = headers or {}


@dataclass(frozen=True)
class RateLimit:
    """What the rate limiter decided for a request it let through."""

    headers: dict[str, str] = field(default_factory=dict)  # X-RateLimit-Limit, -Remaining, -Reset


@dataclass(frozen=True)
class Reservation:
    """Requests and tokens held against a quota until ``reconcile`` settles them."""

    user_id: int
    location_pk: int
    organization_id: int | None
    action: str
    requests: int = 0
    tokens: int = 0
    ref: str = ""  # what it is for (a task or batch id), when another process settles it


NO_LIMIT = RateLimit()


def check_rate_limit(principal: Principal, *, action: str, units: int = 1, ip: str | None = None) -> RateLimit:
    """Take ``units`` from the caller's token buckets (per API key, user and IP). No-op today."""
    return NO_LIMIT


def reserve(
    principal: Principal,
    *,
    action: str,
    model: str,
    requests: int = 1,
    max_tokens: int | None = None,
    ref: str = "",
) -> Reservation:
    """Reserve ``requests`` requests and up to ``max_tokens`` tokens each (None: the model's
    default) against the caller's organization and location quotas. No-op today: reserves nothing."""
    return Reservation(principal.user_id, principal.location_pk, principal.organization_id, action, requests, 0, ref)


def reservation_for(principal: Principal, *, action: str, ref: str) -> Reservation:
    """The reservation made for ``ref`` at submit, as the process that settles it (a worker) finds
    it. No-op today: an empty reservation."""
    return Reservation(principal.user_id, principal.location_pk, principal.organization_id, action, 0, 0, ref)


def reconcile(reservation: Reservation, *, prompt_tokens: int, completion_tokens: int, completed: bool) -> None:
    """Replace the reservation with the real usage (``completed`` False: nothing was produced, the
    reservation is released). Never raises. No-op today."""
