"""The strength rules refuse keys a person typed and accept the random keys people generate:
``openssl rand -hex 16`` (32 characters, the shortest allowed), ``secrets.token_urlsafe``,
Django's ``get_random_secret_key``, Fernet's ``generate_key``."""

from __future__ import annotations

import secrets

import pytest
from cryptography.fernet import Fernet
from django.core.management.utils import get_random_secret_key

from medai.secrets import fernet_key_problems, text_key_problems

GENERATORS = {
    "openssl rand -hex 16": lambda: secrets.token_hex(16),
    "token_urlsafe(24)": lambda: secrets.token_urlsafe(24),
    "token_urlsafe(50)": lambda: secrets.token_urlsafe(50),
    "get_random_secret_key": get_random_secret_key,
}


@pytest.mark.parametrize("generator", GENERATORS)
def test_generated_keys_are_accepted(generator: str) -> None:
    refused = [k for k in (GENERATORS[generator]() for _ in range(2000)) if text_key_problems("SECRET_KEY", k)]
    assert refused == []


def test_generated_fernet_keys_are_accepted() -> None:
    keys = tuple(Fernet.generate_key().decode() for _ in range(2000))
    assert fernet_key_problems("MEDAI_ENCRYPTION_KEYS", keys) == []


@pytest.mark.parametrize(
    "typed",
    [
        "a" * 32,
        "ab" * 16,
        "0123456789abcdef" * 2,
        "abcdefghijklmnopqrstuvwxyz012345",
        "password" * 4,
        "changeme" * 4,
        "x" * 31 + "y",
        "aaaaaaaaaaaaaaaabbbbbbbbbbbbbbbb",
        "qwertyqwertyqwertyqwertyqwertyqw",
    ],
)
def test_typed_keys_are_refused_as_guessable(typed: str) -> None:
    (problem,) = text_key_problems("JWT_SIGNING_KEY", typed)
    assert problem.startswith("JWT_SIGNING_KEY is guessable")
