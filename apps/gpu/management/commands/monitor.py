"""``manage.py monitor``: GPU sampling, health checks, model-server supervision (apps/gpu/monitor.py)."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand

from apps.gpu.monitor import Monitor
from apps.gpu.providers import get_provider


class Command(BaseCommand):
    help = "Sample GPUs, health-check backends, supervise model servers and publish the GPU state."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--provider", choices=["auto", "nvml", "simulated", "none"], help="Override MEDAI_GPU_PROVIDER."
        )
        parser.add_argument("--once", action="store_true", help="One pass (sample, health, metrics), then exit.")

    def handle(self, *args: Any, provider: str | None = None, once: bool = False, **options: Any) -> None:
        monitor = Monitor(get_provider(provider), supervise=not once)
        if once:
            monitor.tick()
            self.stdout.write(
                f"GPU provider {monitor.provider.name}: pressure {monitor.decision['level']}, "
                f"thermal {monitor.decision['thermal']}"
            )
            return
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        monitor.run(stop)
