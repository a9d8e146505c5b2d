"""The A/B comparison's verdict on a seeded run (issue 12: "the A/B test's verdict on a seeded run").

Two arms of the MedicalQA route, seeded with a known difference, then the comparison that admin
shows (``apps.inference.experiments.compare``) printed as it is: per arm requests, latency
percentiles, failure rate and thumbs-up rate, and each test's statistic, p-value and verdict.

The seed (``--seed``, fixed by default so the run repeats): arm-a answers in 80–160 ms and is
rated up 75% of the time, arm-b in 150–260 ms and rated up 55%; both fail 5% of requests. A second
comparison with the same distributions on both arms shows what "no difference" looks like. Each
arm's requests are answered tasks (``InferenceTask`` rows as the pipeline records them) and each
rating a ``Feedback`` row stored against its arm, as ``POST /v1/feedback`` stores it; a throw-away
SQLite database::

    .venv/bin/python bench/ab_seeded.py
    .venv/bin/python bench/ab_seeded.py --requests 400 --rated 0.5 --seed 7
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.tenant import environment, tenant  # noqa: E402

ROUTE = "MedicalQA"


def seed(
    bench: Any, arm: str, n: int, latency: tuple[int, int], up_rate: float, rated: float, rng: random.Random
) -> None:
    from django.utils import timezone

    from apps.inference.models import Feedback, InferenceTask

    now = timezone.now()
    tasks, ratings = [], []
    for i in range(n):
        failed = rng.random() < 0.05
        task = InferenceTask(
            mode="sync",
            status="failed" if failed else "completed",
            agent_type=ROUTE,
            arm=arm,
            model_name=arm,
            user=bench.user,
            location=bench.location,
            latency_ms=None if failed else rng.randint(*latency),
            created_at=now - timedelta(minutes=i),
        )
        tasks.append(task)
        if not failed and rng.random() < rated:
            up = rng.random() < up_rate
            ratings.append(
                Feedback(
                    task=task,
                    user=bench.user,
                    location=bench.location,
                    model_name=arm,
                    agent_type=ROUTE,
                    arm=arm,
                    rating=Feedback.Rating.UP if up else Feedback.Rating.DOWN,
                    created_at=task.created_at,
                    updated_at=task.created_at,
                )
            )
    InferenceTask.objects.bulk_create(tasks)
    Feedback.objects.bulk_create(ratings)


def show(title: str) -> None:
    from apps.inference import experiments

    result = experiments.compare(ROUTE)
    print(f"\n== {title}")
    print(f"  {'arm':8} {'requests':>8} {'p50 ms':>7} {'p95 ms':>7} {'failed':>7} {'rated':>6} {'up':>6}")
    for a in result.arms:
        up = f"{100 * a.up_rate:.0f}%" if a.up_rate is not None else "-"
        failed = f"{100 * (a.failure_rate or 0):.1f}%"
        print(
            f"  {a.arm:8} {a.requests:8} {a.latency_pct(0.5) or '-':>7} {a.latency_pct(0.95) or '-':>7} "
            f"{failed:>7} {a.rated:6} {up:>6}"
        )
    for t in result.tests:
        stat = f"{t.statistic:.3f}" if t.statistic is not None else "-"
        p = f"{t.p_value:.3g}" if t.p_value is not None else "-"
        print(f"  {t.name:36} statistic {stat:>10}  p {p:>9}  -> {t.verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per arm")
    parser.add_argument("--rated", type=float, default=0.4, help="share of answers rated")
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="medai-abseed-"))
    try:
        environment(tmp / "var", "abseed", f"sqlite:///{tmp / 'medai.sqlite3'}", "redis://127.0.0.1:6379/15")
        import django

        django.setup()
        from django.core.management import call_command

        from apps.inference.models import Feedback, InferenceTask

        call_command("migrate", verbosity=0)
        bench = tenant()
        rng = random.Random(args.seed)
        seed(bench, "arm-a", args.requests, (80, 160), 0.75, args.rated, rng)
        seed(bench, "arm-b", args.requests, (150, 260), 0.55, args.rated, rng)
        show(f"seeded difference (seed {args.seed}): arm-a faster and rated up 75%, arm-b 55%")
        Feedback.objects.all().delete()
        InferenceTask.objects.all().delete()
        seed(bench, "arm-a", args.requests, (100, 200), 0.65, args.rated, rng)
        seed(bench, "arm-b", args.requests, (100, 200), 0.65, args.rated, rng)
        show("no difference seeded: both arms 100-200 ms, rated up 65%")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
