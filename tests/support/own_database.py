"""A database of its own for tests that run medai in separate processes (web, qcluster, writers):
a SQLite file, or a fresh PostgreSQL database when the suite runs on PostgreSQL, migrated by
``manage.py migrate``. The test process reads it directly (no Django in it points there)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def own_database(tmp_path: Path, **extra_env: str) -> Iterator[dict[str, str]]:
    """The environment for child processes: ``DATABASE_URL`` of a new migrated database, a var
    dir and cache prefix of their own, the suite's Redis. Dropped at the end (PostgreSQL)."""
    env = {
        **os.environ,
        "MEDAI_VAR_DIR": str(tmp_path),
        "MEDAI_CACHE_PREFIX": f"own-{uuid.uuid4().hex[:8]}",
        "LOG_LEVEL": "WARNING",
        **extra_env,
    }
    env.pop("PYTEST_CURRENT_TEST", None)
    pg = env.get("DATABASE_URL", "")
    dbname, admin = "", ""
    if pg.startswith("postgres"):
        import psycopg

        dbname = f"medai_own_{uuid.uuid4().hex[:10]}"
        admin = pg.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
        env["DATABASE_URL"] = pg.rsplit("/", 1)[0] + "/" + dbname
    else:
        env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'own.sqlite3'}"
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=300)
        yield env
    finally:
        if dbname:
            import psycopg

            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def rows(env: dict[str, str], sql: str) -> list[tuple[Any, ...]]:
    url = env["DATABASE_URL"]
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///"), timeout=20) as conn:
            return list(conn.execute(sql))
    import psycopg

    with psycopg.connect(url) as conn:
        return list(conn.execute(sql))


def manage_shell(env: dict[str, str], code: str, timeout: float = 180) -> str:
    """Run ``code`` in ``manage.py shell`` against that database; its stdout."""
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        timeout=timeout,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise AssertionError(f"manage.py shell failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result.stdout
