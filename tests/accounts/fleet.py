"""Real processes for the governance exactness tests: medai's web processes (uvicorn on
``medai.asgi``) on a database of their own and the suite's Redis, and client processes
(load_client.py) that drive them at once."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.inference.cluster_helpers import stop
from tests.support.own_database import ROOT
from tests.support.servers import free_port, wait_http

CLIENT = Path(__file__).with_name("load_client.py")


@contextmanager
def web_processes(env: dict[str, str], n: int, log: Path) -> Iterator[list[str]]:
    """``n`` uvicorn processes on medai's ASGI app; their base URLs."""
    procs, urls = [], []
    with log.open("ab") as out:
        try:
            for _ in range(n):
                port = free_port()
                argv = [sys.executable, "-m", "uvicorn", "medai.asgi:application", "--host", "127.0.0.1"]
                argv += ["--port", str(port), "--no-access-log", "--log-level", "warning"]
                procs.append(
                    subprocess.Popen(
                        argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                    )
                )
                urls.append(f"http://127.0.0.1:{port}")
            for proc, url in zip(procs, urls, strict=True):
                wait_http(url + "/healthz", 120, proc)
            yield urls
        finally:
            for proc in procs:
                stop(proc)  # SIGTERM: each writes its pending records before it exits


def drive(urls: list[str], auth: str, *, processes: int = 4, clients: int = 50, **options: Any) -> list[dict[str, Any]]:
    """Run ``processes`` client processes of ``clients`` concurrent clients each, started together;
    what each was answered."""
    argv = [sys.executable, str(CLIENT), "--auth", auth, "--clients", str(clients)]
    for url in urls:
        argv += ["--url", url]
    for name, value in options.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    argv += ["--start-at", str(time.time() + 2.0)]  # every process imported and connected by then
    running = [
        subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    results = []
    for proc in running:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results
