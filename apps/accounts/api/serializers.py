from __future__ import annotations

from rest_framework import serializers


class LoginSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=256, trim_whitespace=False)
    location_id = serializers.CharField(max_length=32)


class RefreshSerializer(serializers.Serializer):
    refresh_token = serializers.CharField(max_length=4096)


class LogoutSerializer(serializers.Serializer):
    refresh_token = serializers.CharField(max_length=4096, required=False, allow_blank=True)


class TokenPairSerializer(serializers.Serializer):
    access_token = serializers.CharField()
    refresh_token = serializers.CharField()
    token_type = serializers.CharField()
    expires_in = serializers.IntegerField()


class MeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    role = serializers.CharField()
    location_id = serializers.CharField()
    scopes = serializers.ListField(child=serializers.CharField())
    auth = serializers.ChoiceField(choices=["jwt", "api_key"])
