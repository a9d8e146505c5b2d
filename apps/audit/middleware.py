from __future__ import annotations

from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpResponseBase

from apps.audit.context import new_correlation_id, reset_correlation_id, set_correlation_id

HEADER = "X-Request-ID"


class CorrelationIdMiddleware:
    """Give every request a correlation id (the caller's ``X-Request-ID`` or a new one).

    Native sync *and* async, so async views do not pay a thread hop for it.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if iscoroutinefunction(self):
            return self.__acall__(request)
        cid = new_correlation_id(request.headers.get(HEADER))
        request.correlation_id = cid
        token = set_correlation_id(cid)
        try:
            response = self.get_response(request)
        finally:
            reset_correlation_id(token)
        response[HEADER] = cid
        return response

    async def __acall__(self, request: Any) -> HttpResponseBase:
        cid = new_correlation_id(request.headers.get(HEADER))
        request.correlation_id = cid
        token = set_correlation_id(cid)
        try:
            response = await self.get_response(request)
        finally:
            reset_correlation_id(token)
        response[HEADER] = cid
        return response
