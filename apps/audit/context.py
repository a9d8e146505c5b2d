"""The correlation id of the work in progress (a request, a task), carried in a contextvar."""

from __future__ import annotations

import contextvars
import re
import uuid

_correlation_id: contextvars.ContextVar[str] = contextvars.ContextVar("correlation_id", default="")
_VALID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def new_correlation_id(candidate: str | None = None) -> str:
    """Use the caller's id when it is well formed (so traces join up), else mint one."""
    if candidate and _VALID.match(candidate):
        return candidate
    return uuid.uuid4().hex


def get_correlation_id() -> str:
    return _correlation_id.get()


def set_correlation_id(value: str) -> contextvars.Token[str]:
    return _correlation_id.set(value)


def reset_correlation_id(token: contextvars.Token[str]) -> None:
    _correlation_id.reset(token)
