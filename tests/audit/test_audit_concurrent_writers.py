"""Several processes appending to the audit trail at once (as web processes, workers and the
monitor do) extend one chain: no fork, no lost event, and ``audit_verify`` passes. On SQLite and,
when the suite runs on PostgreSQL, there (each in a database of its own, shared by the writers)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.own_database import ROOT, own_database, rows

WRITERS = 4
SINGLE = 20  # record_event calls per writer
BATCHES = 5  # record_events calls of BATCH events per writer
BATCH = 4
LOCKSTEP = 3  # rounds the writers take in step, so that their events are sure to interleave

WRITER = (
    """
import os, time
from pathlib import Path
from apps.audit.services import new_event, record_event, record_events
name, go = os.environ["WRITER"], Path(os.environ["GO_FILE"])

def wait_for(*paths):
    deadline = time.monotonic() + 120
    while not all(p.exists() for p in paths):
        if time.monotonic() > deadline:
            raise SystemExit(f"{name}: the other writers never reached {paths}")
        time.sleep(0.005)

wait_for(go)
for i in range(SINGLE):
    record_event("test.write", details={"writer": name, "i": i})
    if i < LOCKSTEP:  # the first rounds in lockstep: every writer's event i before anyone's i + 1
        (go.parent / f"{name}.{i}").touch()
        wait_for(*(go.parent / f"w{n}.{i}" for n in range(WRITERS)))
    if i % (SINGLE // BATCHES) == 0:
        record_events([new_event("test.batch", details={"writer": name, "i": i, "j": j}) for j in range(BATCH)])
""".replace("LOCKSTEP", str(LOCKSTEP))
    .replace("WRITERS", str(WRITERS))
    .replace("BATCHES", str(BATCHES))
    .replace("SINGLE", str(SINGLE))
    .replace("BATCH", str(BATCH))
)


@pytest.fixture
def shared_db(tmp_path: Path):
    with own_database(tmp_path) as env:
        yield env


def test_concurrent_writers_extend_one_chain_that_verifies(shared_db, tmp_path):
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "manage.py", "shell", "-c", WRITER],
            cwd=ROOT,
            env={**shared_db, "WRITER": f"w{n}", "GO_FILE": str(go)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for n in range(WRITERS)
    ]
    time.sleep(0.5)  # let them start Django; each waits for the go file, so they write at once
    go.touch()
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out.decode(errors="replace")[-3000:]

    expected = WRITERS * (SINGLE + BATCHES * BATCH)
    chain = rows(shared_db, "SELECT seq, prev_hash, hash, details FROM audit_auditevent ORDER BY seq")
    assert len(chain) == expected
    prevs = [prev for _, prev, _, _ in chain]
    assert len(set(prevs)) == len(prevs), "two events extend the same event: the chain forked"
    assert [prev for _, prev, _, _ in chain[1:]] == [h for _, _, h, _ in chain[:-1]]
    # the writers ran concurrently: in each lockstep round every writer's event precedes every
    # writer's next one, so the chain switches writer at least WRITERS - 1 times a round
    writers = [json.loads(d)["writer"] if isinstance(d, str) else d["writer"] for *_, d in chain]
    switches = sum(1 for a, b in zip(writers, writers[1:], strict=False) if a != b)
    assert switches >= LOCKSTEP * (WRITERS - 1)

    verify = subprocess.run(
        [sys.executable, "manage.py", "audit_verify"],
        cwd=ROOT,
        env=shared_db,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stderr
    assert f"{expected} events verified" in verify.stdout
