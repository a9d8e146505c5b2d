"""Load medai's settings in a fresh Python process with an environment of the test's choosing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SECRET_VARIABLES = ("SECRET_KEY", "JWT_SIGNING_KEY", "MEDAI_ENCRYPTION_KEYS", "MEDAI_AUDIT_KEYS")
# The former embedded default's key: public (it was in the source), so anyone could sign with it.
FORMER_DEV_SECRET_KEY = "medai-dev-insecure-secret-key-change-me-0123456789abcdef"


def settings_env(var_dir: Path, medai_env: str | None, **variables: str) -> dict[str, str]:
    """This process's environment without any secret, MEDAI_ENV or DEBUG, plus ``variables``.
    REDIS_URL points at nothing (loading the settings never connects) so no embedded Redis starts;
    the database is SQLite in ``var_dir``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k.removesuffix("_FILE") not in SECRET_VARIABLES and k not in ("MEDAI_ENV", "DEBUG", "PYTEST_CURRENT_TEST")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="medai.settings",
        MEDAI_VAR_DIR=str(var_dir),
        REDIS_URL="redis://127.0.0.1:9/0",
        DATABASE_URL=f"sqlite:///{var_dir / 'medai.sqlite3'}",
        LOG_LEVEL="WARNING",
    )
    if medai_env is not None:
        env["MEDAI_ENV"] = medai_env
    env.update(variables)
    return env


def run_django(
    env: dict[str, str], code: str = "", *, setup: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``django.setup()`` (or, with ``setup=False``, only loading the settings, which is where a
    refusal happens) then ``code``, in a new interpreter."""
    start = "import django\ndjango.setup()\n" if setup else "from django.conf import settings\nsettings.SECRET_KEY\n"
    return subprocess.run(
        [sys.executable, "-c", start + code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
