from __future__ import annotations

from dataclasses import asdict

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts import services
from apps.accounts.api.serializers import (
    LoginSerializer,
    LogoutSerializer,
    MeSerializer,
    RefreshSerializer,
    TokenPairSerializer,
)
from apps.accounts.authentication import principal_of


def client_ip(request: Request) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


class LoginView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(request=LoginSerializer, responses={200: TokenPairSerializer, 401: None, 403: None, 429: None})
    def post(self, request: Request) -> Response:
        data = LoginSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            pair = services.login(
                data.validated_data["username"],
                data.validated_data["password"],
                data.validated_data["location_id"],
                ip=client_ip(request),
                request=request._request,  # for django-axes only (lockout)
            )
        except services.LockedOut as exc:
            raise exceptions.Throttled(exc.retry_after, exc.message, exc.code) from None
        except services.LoginDenied as exc:
            raise exceptions.PermissionDenied(exc.message, exc.code) from None
        except services.AuthError as exc:
            raise exceptions.AuthenticationFailed(exc.message, exc.code) from None
        return Response(asdict(pair))


class RefreshView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(request=RefreshSerializer, responses=TokenPairSerializer)
    def post(self, request: Request) -> Response:
        data = RefreshSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            pair = services.refresh_tokens(data.validated_data["refresh_token"], ip=client_ip(request))
        except services.AuthError as exc:
            raise exceptions.AuthenticationFailed(exc.message, exc.code) from None
        return Response(asdict(pair))


class LogoutView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(request=LogoutSerializer, responses={204: None})
    def post(self, request: Request) -> Response:
        data = LogoutSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            services.logout(
                principal_of(request), data.validated_data.get("refresh_token") or None, ip=client_ip(request)
            )
        except services.AuthError as exc:
            raise exceptions.PermissionDenied(exc.message, exc.code) from None
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses=MeSerializer)
    def get(self, request: Request) -> Response:
        p = principal_of(request)
        return Response(
            {
                "id": p.user_id,
                "username": p.username,
                "role": p.role,
                "location_id": p.location_code,
                "scopes": sorted(p.scopes),
                "auth": p.method,
            }
        )
