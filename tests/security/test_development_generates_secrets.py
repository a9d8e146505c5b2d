"""An explicit development or test environment generates its missing keys once, into the var dir
(0600), and every later start (and every process started at the same time) uses the same ones; the
encryption key is independent of both signing keys, so data encrypted in one process decrypts in
the next."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.support.django_process import ROOT, run_django, settings_env

FILES = ("secret-key", "jwt-signing-key", "encryption-keys", "audit-keys")

FINGERPRINTS = """
import hashlib, json
from django.conf import settings
fp = lambda v: hashlib.sha256(v.encode()).hexdigest()
print(json.dumps({"SECRET_KEY": fp(settings.SECRET_KEY), "JWT_SIGNING_KEY": fp(settings.SIMPLE_JWT["SIGNING_KEY"]),
                  "MEDAI_ENCRYPTION_KEYS": [fp(k) for k in settings.MEDAI_ENCRYPTION_KEYS]}))
"""


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _fingerprints(result: subprocess.CompletedProcess[str]) -> dict:
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _fp(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@pytest.mark.parametrize("medai_env", ["development", " Test "])
def test_development_generates_private_key_files_in_a_fresh_var_dir_and_reuses_them(
    tmp_path: Path, medai_env: str
) -> None:
    var = tmp_path / "var"
    first = _fingerprints(run_django(settings_env(var, medai_env), FINGERPRINTS))
    assert _mode(var) == 0o700
    for name in FILES:
        assert _mode(var / name) == 0o600, name
    contents = {name: (var / name).read_text().strip() for name in FILES}
    assert first == {
        "SECRET_KEY": _fp(contents["secret-key"]),
        "JWT_SIGNING_KEY": _fp(contents["jwt-signing-key"]),
        "MEDAI_ENCRYPTION_KEYS": [_fp(contents["encryption-keys"])],
    }
    assert len(contents["secret-key"]) >= 50 and len(contents["jwt-signing-key"]) >= 50
    Fernet(contents["encryption-keys"].encode())  # a valid Fernet key
    assert not list(var.glob(".*.tmp"))  # no temporary file left behind

    second = _fingerprints(run_django(settings_env(var, medai_env), FINGERPRINTS))
    assert second == first
    assert {name: (var / name).read_text().strip() for name in FILES} == contents


def test_processes_starting_together_end_up_with_the_same_keys(tmp_path: Path) -> None:
    var = tmp_path / "var"
    env = settings_env(var, "development")
    code = "from django.conf import settings\nsettings.SECRET_KEY\n" + FINGERPRINTS
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(6)
    ]
    results = [subprocess.CompletedProcess(p.args, p.wait(120), *p.communicate()) for p in procs]
    seen = [_fingerprints(r) for r in results]
    assert all(s == seen[0] for s in seen), seen
    assert sorted(p.name for p in var.iterdir() if p.name in FILES) == sorted(FILES)


def _former_derivation(key: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(b"medai-at-rest:" + key.encode()).digest()).decode()


ENCRYPT = """
from apps.audit.fields import encrypt
print("TOKEN=" + encrypt("Mrs Smith, MRN 12345: sepsis?"))
"""
DECRYPT = """
import sys
from apps.audit.fields import decrypt
print("PLAIN=" + decrypt(sys.argv[1]))
"""


def test_the_encryption_key_is_independent_of_the_signing_keys_and_survives_a_restart(tmp_path: Path) -> None:
    var = tmp_path / "var"
    env = settings_env(var, "development")
    first = run_django(env, ENCRYPT)
    assert first.returncode == 0, first.stderr[-3000:]
    token = first.stdout.split("TOKEN=", 1)[1].strip()

    secret_key, jwt_key = (var / "secret-key").read_text().strip(), (var / "jwt-signing-key").read_text().strip()
    fernet_key = (var / "encryption-keys").read_text().strip()
    assert len({secret_key, jwt_key, fernet_key}) == 3
    assert fernet_key not in (_former_derivation(secret_key), _former_derivation(jwt_key))
    assert Fernet(fernet_key.encode()).decrypt(token.encode()) == b"Mrs Smith, MRN 12345: sepsis?"

    second = subprocess.run(
        [sys.executable, "-c", "import django\ndjango.setup()\n" + DECRYPT, token],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.split("PLAIN=", 1)[1].strip() == "Mrs Smith, MRN 12345: sepsis?"


def test_a_development_key_given_in_the_environment_is_used_and_the_others_generated(tmp_path: Path) -> None:
    var = tmp_path / "var"
    given = Fernet.generate_key().decode()
    seen = _fingerprints(run_django(settings_env(var, "development", MEDAI_ENCRYPTION_KEYS=given), FINGERPRINTS))
    assert seen["MEDAI_ENCRYPTION_KEYS"] == [_fp(given)]
    assert not (var / "encryption-keys").exists()
    assert (var / "secret-key").exists() and (var / "jwt-signing-key").exists()


def test_the_suite_and_the_processes_it_starts_share_their_keys() -> None:
    """Tests start uvicorn, qcluster and manage.py with this process's environment: same keys."""
    from django.conf import settings
    from rest_framework_simplejwt.tokens import AccessToken

    from apps.audit.fields import encrypt

    assert settings.MEDAI_ENV == "test"
    assert settings.SIMPLE_JWT["SIGNING_KEY"] != settings.SECRET_KEY
    token = encrypt("shared PHI")
    access = AccessToken()
    access["sub"] = "42"
    code = (
        DECRYPT + FINGERPRINTS + "from rest_framework_simplejwt.tokens import AccessToken\n"
        "print('SUB=' + AccessToken(sys.argv[2])['sub'])\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            code.replace("sys.argv[1]", repr(token)).replace("sys.argv[2]", repr(str(access))),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "PLAIN=shared PHI" in result.stdout and "SUB=42" in result.stdout
    child = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("{")))
    assert child == {
        "SECRET_KEY": _fp(settings.SECRET_KEY),
        "JWT_SIGNING_KEY": _fp(settings.SIMPLE_JWT["SIGNING_KEY"]),
        "MEDAI_ENCRYPTION_KEYS": [_fp(k) for k in settings.MEDAI_ENCRYPTION_KEYS],
    }
