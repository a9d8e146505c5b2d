"""Anything but an explicit development or test environment (MEDAI_ENV unset included) refuses to
start on a missing, short, guessable, published or shared key, an invalid Fernet key, or DEBUG;
with four strong, separate keys it starts and uses exactly those."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.support.django_process import FORMER_DEV_SECRET_KEY, ROOT, run_django, settings_env

FORMER_DERIVED_FERNET_KEY = "kJRglT2RyXVhiuNha64I81oXeGtiObhjBZgMdKD8c7o="  # sha256("medai-at-rest:" + former key)


def strong() -> dict[str, str]:
    return {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "JWT_SIGNING_KEY": secrets.token_urlsafe(50),
        "MEDAI_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "MEDAI_AUDIT_KEYS": secrets.token_urlsafe(50),
    }


def _derived(key: str) -> str:
    import base64
    import hashlib

    return base64.urlsafe_b64encode(hashlib.sha256(b"medai-at-rest:" + key.encode()).digest()).decode()


def _longest_example_value() -> str:
    values = [
        line.partition("=")[2].strip()
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    ]
    return max(values, key=len)


# (what is wrong, the variables that make it so, the variable the refusal must name)
DEFECTS = {
    "SECRET_KEY missing": (lambda s: {"SECRET_KEY": None}, "SECRET_KEY"),
    "JWT_SIGNING_KEY missing": (lambda s: {"JWT_SIGNING_KEY": None}, "JWT_SIGNING_KEY"),
    "MEDAI_ENCRYPTION_KEYS missing": (lambda s: {"MEDAI_ENCRYPTION_KEYS": None}, "MEDAI_ENCRYPTION_KEYS"),
    "MEDAI_AUDIT_KEYS missing": (lambda s: {"MEDAI_AUDIT_KEYS": None}, "MEDAI_AUDIT_KEYS"),
    "MEDAI_AUDIT_KEYS short": (lambda s: {"MEDAI_AUDIT_KEYS": "short-audit-key"}, "MEDAI_AUDIT_KEYS"),
    "MEDAI_AUDIT_KEYS equal to SECRET_KEY": (lambda s: {"MEDAI_AUDIT_KEYS": s["SECRET_KEY"]}, "MEDAI_AUDIT_KEYS"),
    "JWT_SIGNING_KEY=x": (lambda s: {"JWT_SIGNING_KEY": "x"}, "JWT_SIGNING_KEY"),
    "JWT_SIGNING_KEY of 31 random characters": (
        lambda s: {"JWT_SIGNING_KEY": secrets.token_hex(16)[:31]},
        "JWT_SIGNING_KEY",
    ),
    "SECRET_KEY = 32 x a": (lambda s: {"SECRET_KEY": "a" * 32}, "SECRET_KEY"),
    "JWT_SIGNING_KEY = 32 x a": (lambda s: {"JWT_SIGNING_KEY": "a" * 32}, "JWT_SIGNING_KEY"),
    "SECRET_KEY of few distinct characters": (lambda s: {"SECRET_KEY": "abc" * 12}, "SECRET_KEY"),
    "SECRET_KEY a repeated word": (lambda s: {"SECRET_KEY": "changeme" * 5}, "SECRET_KEY"),
    "JWT_SIGNING_KEY a sequence": (
        lambda s: {"JWT_SIGNING_KEY": "0123456789abcdefghijklmnopqrstuvwxyz"},
        "JWT_SIGNING_KEY",
    ),
    "SECRET_KEY the former development key": (lambda s: {"SECRET_KEY": FORMER_DEV_SECRET_KEY}, "SECRET_KEY"),
    "JWT_SIGNING_KEY the former development key": (
        lambda s: {"JWT_SIGNING_KEY": FORMER_DEV_SECRET_KEY},
        "JWT_SIGNING_KEY",
    ),
    "SECRET_KEY a django-insecure key": (
        lambda s: {"SECRET_KEY": "django-insecure-" + secrets.token_urlsafe(40)},
        "SECRET_KEY",
    ),
    "SECRET_KEY from .env.example": (lambda s: {"SECRET_KEY": _longest_example_value()}, "published"),
    "JWT_SIGNING_KEY equal to SECRET_KEY": (lambda s: {"JWT_SIGNING_KEY": s["SECRET_KEY"]}, "JWT_SIGNING_KEY"),
    "MEDAI_ENCRYPTION_KEYS not a Fernet key": (
        lambda s: {"MEDAI_ENCRYPTION_KEYS": secrets.token_urlsafe(50)},
        "MEDAI_ENCRYPTION_KEYS",
    ),
    "MEDAI_ENCRYPTION_KEYS of zero bytes": (
        lambda s: {"MEDAI_ENCRYPTION_KEYS": "A" * 43 + "="},
        "MEDAI_ENCRYPTION_KEYS",
    ),
    "MEDAI_ENCRYPTION_KEYS the former derived key": (
        lambda s: {"MEDAI_ENCRYPTION_KEYS": FORMER_DERIVED_FERNET_KEY},
        "MEDAI_ENCRYPTION_KEYS",
    ),
    "MEDAI_ENCRYPTION_KEYS derived from SECRET_KEY": (
        lambda s: {"MEDAI_ENCRYPTION_KEYS": _derived(s["SECRET_KEY"])},
        "MEDAI_ENCRYPTION_KEYS",
    ),
    "an old MEDAI_ENCRYPTION_KEYS key invalid": (
        lambda s: {"MEDAI_ENCRYPTION_KEYS": s["MEDAI_ENCRYPTION_KEYS"] + ",not-a-key"},
        "MEDAI_ENCRYPTION_KEYS",
    ),
    "DEBUG=1": (lambda s: {"DEBUG": "1"}, "DEBUG"),
}
ENVIRONMENTS = [None, "production", "Production", "prod", "staging", "embedded", ""]


def _refusal(env: dict[str, str]) -> str:
    result = run_django(env, setup=False)
    assert result.returncode != 0, "the settings loaded"
    assert "ImproperlyConfigured" in result.stderr, result.stderr[-2000:]
    return result.stderr.rsplit("ImproperlyConfigured:", 1)[1]


# Each defect once, under environments taken in turn; the strict rules do not depend on the name.
@pytest.mark.parametrize("defect", DEFECTS)
def test_settings_refuse_to_load_outside_development(tmp_path: Path, defect: str) -> None:
    medai_env = ENVIRONMENTS[list(DEFECTS).index(defect) % len(ENVIRONMENTS)]
    keys = strong()
    make, variable = DEFECTS[defect]
    variables = {name: value for name, value in {**keys, **make(keys)}.items() if value is not None}  # None: unset
    message = _refusal(settings_env(tmp_path, medai_env, **variables))
    assert variable in message
    for value in variables.values():  # the message never repeats a key
        assert len(value) < 8 or value not in message


@pytest.mark.parametrize("medai_env", ENVIRONMENTS)
def test_every_non_development_environment_refuses_missing_keys_and_says_what_to_set(
    tmp_path: Path, medai_env: str | None
) -> None:
    message = _refusal(settings_env(tmp_path, medai_env))
    for variable in (
        "SECRET_KEY",
        "JWT_SIGNING_KEY",
        "MEDAI_ENCRYPTION_KEYS",
        "MEDAI_AUDIT_KEYS",
        "MEDAI_ENV=development",
    ):
        assert variable in message
    assert not (tmp_path / "secret-key").exists()  # nothing was generated


PRINT_KEYS = """
import json
from django.conf import settings
print(json.dumps({"SECRET_KEY": settings.SECRET_KEY, "JWT_SIGNING_KEY": settings.SIMPLE_JWT["SIGNING_KEY"],
                  "MEDAI_ENCRYPTION_KEYS": ",".join(settings.MEDAI_ENCRYPTION_KEYS),
                  "MEDAI_AUDIT_KEYS": ",".join(settings.MEDAI_AUDIT_KEYS), "DEBUG": settings.DEBUG}))
"""


@pytest.mark.parametrize("medai_env", [None, "production", "staging"])
def test_settings_load_with_four_strong_separate_keys_and_use_exactly_them(tmp_path: Path, medai_env) -> None:
    keys = strong()
    keys["MEDAI_ENCRYPTION_KEYS"] += "," + Fernet.generate_key().decode()  # rotation: an older key kept
    result = run_django(settings_env(tmp_path, medai_env, **keys, DEBUG="0"), PRINT_KEYS)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1]) == {**keys, "DEBUG": False}
    assert not (tmp_path / "secret-key").exists()


def test_secrets_are_read_from_their_file_variants(tmp_path: Path) -> None:
    keys = strong()
    files = {}
    for name, value in keys.items():
        path = tmp_path / f"{name.lower()}.txt"
        path.write_text(value.replace(",", "\n") + "\n")
        files[f"{name}_FILE"] = str(path)
    var = tmp_path / "var"
    result = run_django(settings_env(var, "production", **files), PRINT_KEYS)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1]) == {**keys, "DEBUG": False}
    # a file variant holding a weak key is refused like the variable
    (tmp_path / "jwt_signing_key.txt").write_text("a" * 40)
    assert "JWT_SIGNING_KEY" in _refusal(settings_env(var, "production", **files))
