"""The pipeline's step names, in order, and a tracing hook that sees each step as it is entered.

Every step function of the pipeline calls ``enter(<its name>)`` first; with no tracer registered
that is one truth test. Tests (tests/inference/test_pipeline_steps.py) and debugging register a
tracer with ``tracing()`` to see the steps a request passes, in order. A failover enters admit
and dispatch once per candidate tried.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

AUTHENTICATE = "authenticate"
AUTHORIZE = "authorize"
VALIDATE = "validate"
RATE_LIMIT = "rate_limit"
QUOTA_RESERVE = "quota_reserve"
ROUTE = "route"
ADMIT = "admit"
DISPATCH = "dispatch"
RECONCILE = "reconcile"
AUDIT = "audit"
METRICS = "metrics"

STEPS = (
    AUTHENTICATE,
    AUTHORIZE,
    VALIDATE,
    RATE_LIMIT,
    QUOTA_RESERVE,
    ROUTE,
    ADMIT,
    DISPATCH,
    RECONCILE,
    AUDIT,
    METRICS,
)

Tracer = Callable[[str], None]
_tracers: list[Tracer] = []


def enter(step: str) -> None:
    """Called by each step as it starts: tell the registered tracers."""
    if _tracers:
        for tracer in tuple(_tracers):
            tracer(step)


@contextmanager
def tracing(tracer: Tracer) -> Iterator[None]:
    """Call ``tracer(step)`` for every step any request of this process enters meanwhile."""
    _tracers.append(tracer)
    try:
        yield
    finally:
        _tracers.remove(tracer)
