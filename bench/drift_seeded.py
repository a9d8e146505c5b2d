"""The drift check on a seeded shift (issue 12: "a drift alert firing on a seeded shift").

One model, five weeks of answers and ratings drawn from the same distributions (60 answers and 30
ratings a week: length 800 ± 150 characters, latency 1,200 ± 200 ms, 80% thumbs up, 2% refusals),
except the last 7 days, where the answers shorten to 300 ± 80 characters and thumbs up falls to
30%; a second model gets the same five weeks without a shift. Then ``manage.py quality`` as an
operator runs it (the worker's hourly schedule does the same), and the ``medai_model_drift`` series
that ``/metrics`` exports from those verdicts, which the alert ``MedaiModelDrift``
(deploy/prometheus/alerts.yml) reads (its firing on this exposition through promtool is
``tests/inference/test_quality_drift.py::test_the_drift_alert_fires_on_the_metric_of_a_seeded_shift``).
A throw-away SQLite database::

    .venv/bin/python bench/drift_seeded.py
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.tenant import environment, tenant  # noqa: E402


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="medai-driftseed-"))
    try:
        environment(tmp / "var", "driftseed", f"sqlite:///{tmp / 'medai.sqlite3'}", "redis://127.0.0.1:6379/15")
        import django

        django.setup()
        from django.core.management import call_command
        from django.utils import timezone
        from prometheus_client import generate_latest
        from prometheus_client.registry import CollectorRegistry

        from apps.inference.metrics import QualityCollector
        from apps.inference.models import ModelEndpoint
        from tests.inference.quality_helpers import seed_model

        call_command("migrate", verbosity=0)
        location = tenant().location
        now = timezone.now()
        for name in ("shifted", "steady"):
            ModelEndpoint.objects.create(name=name, base_url="http://127.0.0.1:9/v1", context_length=2048)
        seed_model(location, now, seed=7, model="shifted", last_week={"length": (300, 80), "up_rate": 0.3})
        seed_model(location, now, seed=8, model="steady")
        call_command("quality")
        registry = CollectorRegistry()
        registry.register(QualityCollector())
        print("\n/metrics, the drift series:")
        for line in generate_latest(registry).decode().splitlines():
            if line.startswith("medai_model_drift{"):
                print("  " + line)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
