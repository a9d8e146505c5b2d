from __future__ import annotations

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from apps.accounts import services
from apps.accounts.models import User
from apps.accounts.services import AuthError, Principal, bearer_token


class BearerAuthentication(BaseAuthentication):
    """``Authorization: Bearer <JWT or API key>``; request.auth becomes the Principal."""

    def authenticate(self, request: Request) -> tuple[User, Principal] | None:
        token = bearer_token(get_authorization_header(request))
        if token is None:
            return None
        try:
            return services.authenticate_bearer(token)
        except AuthError as exc:
            raise exceptions.AuthenticationFailed(exc.message, exc.code) from None

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="medai"'


def principal_of(request: Request) -> Principal:
    """The Principal that BearerAuthentication put on ``request.auth``, for a view behind
    IsAuthenticated (the only authentication class, so an authenticated request always has one)."""
    principal = request.auth
    if not isinstance(principal, Principal):
        raise exceptions.NotAuthenticated()
    return principal
