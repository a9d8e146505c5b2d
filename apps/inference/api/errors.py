"""DRF's exception handler: every API error, DRF's own included, in the OpenAI shape
(``apps/inference/errors.py``)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response

from apps.inference.errors import ApiError, error_body, validation_api_error


def openai_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF exception handler: every API error in the OpenAI shape."""
    if isinstance(exc, ApiError):
        resp = Response(exc.body(), status=exc.status_code, headers=exc.headers)
    elif isinstance(exc, exceptions.ValidationError):
        err = validation_api_error(exc.detail)
        resp = Response(err.body(), status=400)
    elif isinstance(exc, exceptions.ParseError):
        resp = Response(error_body(400, "invalid_json", f"Request body is not valid JSON: {exc.detail}"), status=400)
    elif isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else "invalid_credentials"
        if isinstance(exc, exceptions.NotAuthenticated):
            code = "missing_credentials"
        resp = Response(error_body(401, code, str(exc.detail)), status=401)
        resp["WWW-Authenticate"] = 'Bearer realm="medai"'
    elif isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else str(exc.default_code)
        resp = Response(error_body(exc.status_code, code, str(exc.detail)), status=exc.status_code)
        wait = getattr(exc, "wait", None)
        if wait:
            resp["Retry-After"] = str(int(wait) + 1)
    elif isinstance(exc, Http404):
        resp = Response(error_body(404, "not_found", "Not found."), status=404)
    elif isinstance(exc, PermissionDenied):
        resp = Response(error_body(403, "permission_denied", "Permission denied."), status=403)
    else:
        return None  # a real bug: let Django's 500 handler (and the error middleware) deal with it
    return resp
