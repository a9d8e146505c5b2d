"""Metrics of processes that exited (a recycled django-q2 worker, a restarted web process) keep
counting in /metrics, folded into one archive per kind so the directory does not grow with every
process that ever lived; their live gauges stop counting (medai/metrics.py ``compact``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client.multiprocess import MultiProcessCollector

from medai.metrics import compact

CHILD = """
import sys
from prometheus_client import Counter, Gauge, Histogram
Counter("t_jobs", "jobs", ["kind"]).labels("a").inc(float(sys.argv[1]))
Histogram("t_seconds", "seconds", buckets=(0.1, 0.5, 1.0)).observe(0.3)
Gauge("t_open", "open now", multiprocess_mode="livesum").set(1)
if len(sys.argv) > 2:
    print("ready", flush=True)
    sys.stdin.readline()  # stay alive until told
"""


def run_child(path: Path, n: float) -> None:
    subprocess.run(
        [sys.executable, "-c", CHILD, str(n)],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(path)},
        check=True,
        timeout=60,
    )


def read(path: Path) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for m in MultiProcessCollector(None, path=str(path)).collect()
        for s in m.samples
    }


JOBS = ("t_jobs_total", frozenset({("kind", "a")}))
COUNT = ("t_seconds_count", frozenset())
SUM = ("t_seconds_sum", frozenset())
LE_05 = ("t_seconds_bucket", frozenset({("le", "0.5")}))
OPEN = ("t_open", frozenset())


def test_exited_processes_keep_counting_after_they_are_folded(tmp_path: Path) -> None:
    run_child(tmp_path, 2)
    run_child(tmp_path, 2)
    assert len(list(tmp_path.glob("*.db"))) == 6  # counter, histogram and gauge of each
    assert read(tmp_path)[OPEN] == 2  # before folding, dead processes' live gauges still count

    compact(str(tmp_path))
    assert sorted(p.name for p in tmp_path.glob("*.db")) == ["counter_archive.db", "histogram_archive.db"]
    values = read(tmp_path)
    assert (values[JOBS], values[COUNT], values[LE_05]) == (4, 2, 2)
    assert abs(values[SUM] - 0.6) < 1e-9
    assert OPEN not in values

    run_child(tmp_path, 1)  # another one exits later: added to the archive, nothing counted twice
    compact(str(tmp_path))
    values = read(tmp_path)
    assert (values[JOBS], values[COUNT]) == (5, 3)
    assert sorted(p.name for p in tmp_path.glob("*.db")) == ["counter_archive.db", "histogram_archive.db"]


def test_a_live_process_is_left_alone(tmp_path: Path) -> None:
    run_child(tmp_path, 1)
    live = subprocess.Popen(
        [sys.executable, "-c", CHILD, "3", "stay"],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert live.stdout is not None and live.stdout.readline().strip() == "ready"
        compact(str(tmp_path))
        names = {p.name for p in tmp_path.glob("*.db")}
        assert {f"counter_{live.pid}.db", f"gauge_livesum_{live.pid}.db"} <= names
        values = read(tmp_path)
        assert (values[JOBS], values[OPEN]) == (4, 1)  # the dead one's count kept, only the live one open
    finally:
        live.communicate("\n", timeout=30)
