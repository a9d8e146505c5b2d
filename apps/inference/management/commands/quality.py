"""``manage.py quality [--recompute] [--model M] [--weeks N]``: compute the models' weekly quality
figures and drift verdicts now (the worker's hourly schedule does the same) and print them.
``--recompute`` rewrites every week since each model's first record, not only the recent ones."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from apps.inference import quality
from apps.inference.models import ModelQualityWeek


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _n(value: int | None) -> str:
    return "-" if value is None else str(value)


HEADER = (
    f"{'week':<10}  {'requests':>8}  {'fail':>6}  {'rated':>5}  {'up':>6}  {'refused':>7}  "
    f"{'chars p50/p95':>13}  {'latency p50/p95 ms':>18}  {'tokens in/out':>15}"
)


def week_line(w: ModelQualityWeek) -> str:
    chars = f"{_n(w.answer_chars_p50)}/{_n(w.answer_chars_p95)}"
    latency = f"{_n(w.latency_p50_ms)}/{_n(w.latency_p95_ms)}"
    tokens = f"{w.prompt_tokens}/{w.completion_tokens}"
    return (
        f"{w.week_start.isoformat():<10}  {w.requests:>8}  {_pct(w.failure_rate):>6}  {w.rated:>5}  "
        f"{_pct(w.rating_rate):>6}  {_pct(w.refusal_rate):>7}  {chars:>13}  {latency:>18}  {tokens:>15}"
    )


class Command(BaseCommand):
    help = "Compute and print each model's weekly quality figures and its drift verdicts."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--model", help="only this model (its public name)")
        parser.add_argument("--recompute", action="store_true", help="rewrite every week since the first record")
        parser.add_argument("--weeks", type=int, default=6, help="weeks to print per model (default 6)")

    def handle(self, *args: Any, **options: Any) -> None:
        reports = quality.assess(model=options["model"], recompute=options["recompute"])
        if not reports:
            self.stdout.write("no model answered in the drift window or its baseline: nothing to assess")
            return
        for report in reports:
            self.stdout.write(self.style.MIGRATE_HEADING(report.model))
            self.stdout.write(HEADER)
            for week in sorted(report.weeks, key=lambda w: w.week_start, reverse=True)[: options["weeks"]]:
                self.stdout.write(week_line(week))
            if report.drift:
                d = report.drift[0]
                self.stdout.write(
                    f"drift, {d.window_start:%Y-%m-%d %H:%M} to {d.window_end:%Y-%m-%d %H:%M} UTC "
                    f"against the baseline from {d.baseline_start:%Y-%m-%d %H:%M}:"
                )
            for d in report.drift:
                line = f"  {d.figure:<13} ({d.test}): {d.verdict}"
                self.stdout.write(self.style.ERROR(line) if d.drifted else line)
        drifted = sum(len(r.drifted) for r in reports)
        self.stdout.write(f"{len(reports)} model(s) assessed, {drifted} figure(s) drifted")
