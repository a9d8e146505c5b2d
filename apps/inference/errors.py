"""OpenAI-shaped errors: ``{"error": {"message", "type", "param", "code"}}`` with a stable code.

``ApiError`` is what the pipeline, the services and the queue raise for a client to see; it lives
below ``api/`` so none of them imports the API layer. DRF's exception handler (rendering DRF's own
exceptions in this shape) is in ``apps/inference/api/errors.py``."""

from __future__ import annotations

from typing import Any

from django.http import JsonResponse

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    410: "gone_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    502: "api_error",
    503: "service_unavailable_error",
    504: "api_error",
}


class ApiError(Exception):
    """An error a client caused or must know about; rendered in the OpenAI error shape."""

    def __init__(
        self, status_code: int, code: str, message: str, param: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.status_code, self.code, self.message, self.param)

    def response(self) -> JsonResponse:
        resp = JsonResponse(self.body(), status=self.status_code)
        for k, v in self.headers.items():
            resp[k] = v
        if self.status_code == 401:
            resp["WWW-Authenticate"] = 'Bearer realm="medai"'
        return resp


def error_body(status_code: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": _TYPES.get(status_code, "api_error"), "param": param, "code": code}}


# Codes a validation error may carry out to the client (DRF's own, "invalid", "required"...,
# become "invalid_request").
PUBLIC_VALIDATION_CODES = frozenset({"unknown_parameter", "unsupported_parameter"})


def first_validation_error(detail: Any, prefix: str = "") -> tuple[str | None, str, str]:
    """Flatten DRF's nested validation detail to (param path, message, code) of its first error."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
                path = f"{prefix}[{key}]"
            else:
                path = f"{prefix}.{key}" if prefix else str(key)
            if key == "non_field_errors":
                path = prefix  # an error of the object itself: its own path
            return first_validation_error(value, path)
    if isinstance(detail, list):
        for index, value in enumerate(detail):
            if isinstance(value, (dict, list)):
                if value:
                    return first_validation_error(value, f"{prefix}[{index}]")
                continue
            return (prefix or None), str(value), getattr(value, "code", "") or ""
    return (prefix or None), str(detail), getattr(detail, "code", "") or ""


def validation_api_error(detail: Any) -> ApiError:
    param, message, code = first_validation_error(detail)
    text = f"{param}: {message}" if param else message
    return ApiError(400, code if code in PUBLIC_VALIDATION_CODES else "invalid_request", text, param)


def handler_json(status_code: int, code: str, message: str) -> JsonResponse:
    return JsonResponse(error_body(status_code, code, message), status=status_code)
