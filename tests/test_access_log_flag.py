"""uvicorn's ``--no-access-log`` keeps the access log off under medai's logging settings (Django's
dictConfig used to turn it back on), and ``--access-log`` keeps it on: a real uvicorn process on
``medai.asgi``, as the launcher starts it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.own_database import ROOT, own_database
from tests.support.servers import free_port, wait_http


def _served_log(tmp_path: Path, flag: str) -> str:
    with own_database(tmp_path) as env:
        port = free_port()
        log_path = tmp_path / "web.log"
        argv = [sys.executable, "-m", "uvicorn", "medai.asgi:application", "--host", "127.0.0.1", "--port", str(port)]
        with log_path.open("wb") as log:
            web = subprocess.Popen(argv + [flag], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_http(f"http://127.0.0.1:{port}/healthz", 120, web)
                for _ in range(3):
                    assert httpx.get(f"http://127.0.0.1:{port}/healthz?probe=4242", timeout=10).status_code == 200
            finally:
                web.terminate()
                web.wait(30)
        return log_path.read_text()


@pytest.mark.parametrize(("flag", "logged"), [("--no-access-log", False), ("--access-log", True)])
def test_the_access_log_flag_is_obeyed(tmp_path: Path, flag: str, logged: bool) -> None:
    # a short number: query values are redacted in log lines, short numbers kept (apps/audit/logging.py)
    assert ("GET /healthz?probe=4242" in _served_log(tmp_path, flag)) is logged
