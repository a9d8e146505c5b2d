"""Instructions per request through one medai process, counted by valgrind's callgrind: a figure
that does not move with the machine's speed, for changes too small to see in wall time.

Machines of this kind moved by 25% (CPU time) and 2x (throughput) within minutes here, which
hides a change of a few percent. callgrind counts the instructions the process executes (every
thread: the event loop and the record writer), which repeats to about 2-3% whatever else the
machine does. Same set-up as ``chat_overhead.py`` (temporary SQLite, embedded Redis, the stub,
governance on with its limits lifted), but medai's uvicorn runs under ``valgrind
--tool=callgrind`` (about 50x slower), sequential keep-alive requests; per series: warm-up
requests, counters zeroed (``callgrind_control -z``), N requests, a dump, its total over N.

``--compare REV`` also runs the build of REV (``git archive``, the same database, Redis and stub)
and reports each series' ratio this tree / REV: the A/B of a change, on one machine in one run::

    .venv/bin/python bench/instructions.py                       # chat, /healthz and embeddings
    .venv/bin/python bench/instructions.py --compare HEAD~1      # this tree against the last commit
    .venv/bin/python bench/instructions.py --requests 400 --rounds 3

Figures only; Debian's valgrind (``apt-get install valgrind``) must be on PATH. Python's own
frames are not attributed (CPython 3.11 has no perf trampoline): use py-spy for where, this for
how much.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.chat_overhead import PROMPT, STUB_MODEL, Env, request_once, uvicorn_args  # noqa: E402


def _send(port: int, n: int, series: str, creds: dict[str, str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    headers = {"Authorization": f"Bearer {creds['api_key']}", "Content-Type": "application/json"}
    chat = json.dumps({"model": STUB_MODEL, "messages": PROMPT, "max_tokens": 1})
    embed = json.dumps({"model": STUB_MODEL, "input": "chest pain", "encoding_format": "base64"})
    for _ in range(n):
        if series == "chat":
            conn.request("POST", "/v1/chat/completions", chat, headers)
        elif series == "embeddings":
            conn.request("POST", "/v1/embeddings", embed, headers)
        else:
            conn.request("GET", "/healthz")
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise SystemExit(f"{series}: {response.status} {body[:300]!r}")
    conn.close()


class Counted:
    """One medai uvicorn under callgrind, from the build in ``tree``."""

    def __init__(self, env: Env, tree: Path, port: int, label: str) -> None:
        self.label, self.port = label, port
        self.out = env.tmp / ("callgrind-" + "".join(c if c.isalnum() else "_" for c in label))
        self.out.mkdir()
        argv = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={self.out}/cg.%p",
            sys.executable,
            *uvicorn_args(port),
        ]
        log = (env.tmp / f"{label}.log").open("wb")
        env.logs.append(log)
        self.proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**env.env, "PYTHONPATH": str(tree)},
            cwd=tree,
            start_new_session=True,
        )
        env.procs[label] = self.proc
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{label} exited early: see {env.tmp / (label + '.log')}")
            try:
                if request_once(f"http://127.0.0.1:{port}/healthz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(1)
        raise SystemExit(f"{label} did not answer within 600 s")

    def count(self, series: str, n: int, warmup: int, creds: dict[str, str]) -> float:
        """Instructions per request of ``n`` requests of ``series`` (after ``warmup`` uncounted)."""
        pid = str(self.proc.pid)
        _send(self.port, warmup, series, creds)
        subprocess.run(["callgrind_control", "-z", pid], check=True, capture_output=True)
        _send(self.port, n, series, creds)
        time.sleep(0.5)  # the record writer's batch belongs to these requests
        before = set(self.out.iterdir())
        subprocess.run(["callgrind_control", "-d", pid], check=True, capture_output=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            new = [p for p in set(self.out.iterdir()) - before if p.stat().st_size > 0]
            if new:
                time.sleep(0.5)  # written whole
                for line in new[0].read_text().splitlines():
                    if line.startswith(("summary:", "totals:")):
                        return int(line.split()[1]) / n
            time.sleep(0.2)
        raise SystemExit(f"{self.label}: no callgrind dump within 60 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="counted requests per series and round")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--series", default="chat,healthz,embeddings")
    parser.add_argument("--compare", metavar="REV", help="also the build of this git revision")
    parser.add_argument("--port-base", type=int, default=18610, help="stub, (unused), medai on this port and the next")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is not on PATH (apt-get install valgrind)")
    args.no_llama, args.settings, args.loop, args.http = True, "medai.settings", "uvloop", "httptools"
    env = Env(args)
    other: Path | None = None
    try:
        creds = env.django("setup")
        env.start(
            "stub",
            [sys.executable, str(ROOT / "bench" / "stub_backend.py"), "--port", str(args.port_base)],
            env.stub_url.removesuffix("/v1") + "/_stats",
        )
        subprocess.run(
            [sys.executable, "-c", _ENABLE_EMBEDDINGS],
            env={**env.env, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
            check=True,
        )
        builds = [Counted(env, ROOT, args.port_base + 2, "this tree")]
        if args.compare:
            other = Path(tempfile.mkdtemp(prefix="medai-instructions-"))
            archive = subprocess.run(["git", "archive", args.compare], cwd=ROOT, check=True, capture_output=True)
            subprocess.run(["tar", "-x", "-C", str(other)], input=archive.stdout, check=True)
            builds.append(Counted(env, other, args.port_base + 3, args.compare))
        series = [s.strip() for s in args.series.split(",") if s.strip()]
        counts: dict[str, dict[str, list[float]]] = {b.label: {s: [] for s in series} for b in builds}
        for r in range(args.rounds):
            for build in builds if r % 2 == 0 else builds[::-1]:
                for s in series:
                    counts[build.label][s].append(build.count(s, args.requests, args.warmup, creds))
                    print(
                        f"  round {r}: {build.label:>12} {s:<10} {counts[build.label][s][-1] / 1e6:8.3f} M", flush=True
                    )
    finally:
        env.close()
        if other is not None:
            shutil.rmtree(other, ignore_errors=True)
    print(f"\nInstructions per request (millions; median of {args.rounds} rounds of {args.requests})")
    for label, by_series in counts.items():
        med = {s: statistics.median(v) for s, v in by_series.items()}
        line = "  ".join(
            f"{s} {m / 1e6:.3f} (spread {(max(v) - min(v)) / m:.1%})"
            for (s, v), m in zip(by_series.items(), med.values(), strict=True)
        )
        print(f"  {label:>12}: {line}")
        if "healthz" in med:
            print(
                f"  {'':>12}  "
                + "  ".join(f"{s} / healthz {m / med['healthz']:.2f}x" for s, m in med.items() if s != "healthz")
            )
    if args.compare:
        this, then = counts["this tree"], counts[args.compare]
        print(
            "  this tree / "
            + args.compare
            + ": "
            + "  ".join(f"{s} {statistics.median(this[s]) / statistics.median(then[s]):.3f}" for s in series)
        )
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    path = results / f"instructions-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"argv": sys.argv, "requests": args.requests, "counts": counts}, indent=1))
    print(f"\nJSON: {path.relative_to(ROOT)}")


# The stub serves embeddings too: the bench's model declares them (chat_overhead's set-up does not).
_ENABLE_EMBEDDINGS = f"""
import django
django.setup()
from apps.inference.models import ModelEndpoint
ModelEndpoint.objects.filter(name={STUB_MODEL!r}).update(supports_embeddings=True)
"""


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "medai.settings")
    main()
