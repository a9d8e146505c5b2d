"""The var dir (keys, database, Redis socket) is 0700 and the SQLite database with its -wal and
-shm files is 0600, whether medai creates them or finds them from an older, laxer version."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

from tests.support.django_process import run_django, settings_env

# Writes through Django's connection (WAL mode) and reports the modes while the connection is open,
# under the usual umask, so SQLite's -wal and -shm files exist.
WRITE_AND_STAT = """
import json, os, stat
os.umask(0o022)
from django.conf import settings
from django.db import connection
with connection.cursor() as cursor:
    cursor.execute("CREATE TABLE IF NOT EXISTS probe (x TEXT)")
    cursor.execute("INSERT INTO probe VALUES ('x')")
name = settings.DATABASES["default"]["NAME"]
modes = {suffix: oct(stat.S_IMODE(os.stat(str(name) + suffix).st_mode))
         for suffix in ("", "-wal", "-shm") if os.path.exists(str(name) + suffix)}
print("MODES=" + json.dumps(modes))
"""


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _modes(var: Path) -> dict[str, str]:
    env = settings_env(var, "development")
    result = run_django(env, WRITE_AND_STAT)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.split("MODES=", 1)[1].strip())


def test_a_new_var_dir_is_0700_and_the_database_and_its_wal_files_are_0600(tmp_path: Path) -> None:
    var = tmp_path / "var"
    old_umask = os.umask(0o022)
    try:
        modes = _modes(var)
    finally:
        os.umask(old_umask)
    assert _mode(var) == 0o700
    assert modes == {"": "0o600", "-wal": "0o600", "-shm": "0o600"}
    assert _mode(var / "medai.sqlite3") == 0o600


def test_an_existing_world_readable_var_dir_and_database_are_made_private(tmp_path: Path) -> None:
    """As an older medai left them: var/ 0755, and a database in use (its -wal and -shm exist) 0644."""
    var = tmp_path / "var"
    old_umask = os.umask(0o022)
    try:
        var.mkdir(mode=0o755)
        holder = sqlite3.connect(var / "medai.sqlite3")
        holder.execute("PRAGMA journal_mode=WAL")
        holder.execute("CREATE TABLE earlier (x TEXT)")
        holder.commit()
        assert _mode(var / "medai.sqlite3-wal") == 0o644 and _mode(var) == 0o755
        try:
            modes = _modes(var)
        finally:
            holder.close()
    finally:
        os.umask(old_umask)
    assert _mode(var) == 0o700
    assert modes == {"": "0o600", "-wal": "0o600", "-shm": "0o600"}
