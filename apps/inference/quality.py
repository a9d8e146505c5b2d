"""Quality and drift: each model's figures per week, and whether its last 7 days differ from its
own baseline, from what outlives retention (no prompt or answer is read).

**The figures** (``ModelQualityWeek``, per model and week, Monday 00:00 UTC on), over the model's
finished generative inferences (chat, legacy completions, responses; not embeddings or rerank,
not answers from the response cache, where no model ran):

* requests (completed + failed) and failures;
* rating rate: thumbs up / (up + down) of the ratings *given* that week (``Feedback.created_at``;
  stored against the model that answered), with the reason codes counted;
* refusal rate: refusals / completed answers whose features were recorded
  (``InferenceTask.refused``: apps/inference/answer_features.py says how a refusal is told, and
  how far to trust it);
* answer length (characters) p50 and p95, latency (end to end, ms) p50 and p95 of completed
  answers: nearest-rank percentiles computed by the database (apps/inference/dashboard/stats.py);
* tokens in and out, summed.

**Drift** (``ModelDrift``): the window is the last 7 days, the baseline the
``MEDAI_DRIFT_BASELINE_WEEKS`` (4) weeks before it. Each figure has one stated test
(apps/inference/significance.py) and flags drift only when both hold: the test's p <
``MEDAI_DRIFT_ALPHA`` (0.01) **and** the change is at least the figure's threshold, so that a
large sample does not flag a difference too small to matter, nor a large change seen on a handful
of requests count as evidence.

=================  ==============================  =========================================
figure             test                            change (threshold)
=================  ==============================  =========================================
answer_length      Mann-Whitney U on characters    median, relative (``..._LENGTH_CHANGE`` 25%)
latency            Mann-Whitney U on ms            median, relative (``..._LATENCY_CHANGE`` 50%)
rating             two-proportion z on thumbs up   rate, absolute (``..._RATING_CHANGE`` 0.10)
refusal            two-proportion z on refusals    rate, absolute (``..._REFUSAL_CHANGE`` 0.05)
=================  ==============================  =========================================

A rate test falls back to Fisher's exact test when an expected count of its 2×2 table is under 5
(rare refusals: there the z-test's p is far too small).

Either direction counts (a model swapped under the same name, a changed system prompt or a
quantisation shows either way). Assumptions, stated where the verdicts are read (README):
requests are treated as independent samples (a clinician asking ten times in a row is not ten
independent opinions, so p is optimistic under heavy reuse); fewer than
``MEDAI_DRIFT_MIN_SAMPLES`` (20) on either side is "not tested"; a rank test takes at most
``MEDAI_QUALITY_SAMPLE_MAX`` values a side, drawn by record id (random UUIDs: a sample without
regard to time). Four figures of each model are tested every hour on a sliding window, so over
weeks some false alarm at alpha 0.01 is expected: the effect threshold is what keeps it rare.

Written by the hourly schedule (``assess_quality``, apps/inference/tasks.py) and
``manage.py quality``; exported as ``medai_model_drift{model, figure}`` at scrape time from the
rows (apps/inference/metrics.py), alerted on by ``MedaiModelDrift`` (deploy/prometheus/alerts.yml).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Min, Q, QuerySet, Sum
from django.utils import timezone

from apps.inference.dashboard.stats import percentiles
from apps.inference.models import Feedback, InferenceTask, ModelDrift, ModelQualityWeek
from apps.inference.significance import compare_proportions, mann_whitney, nearest_rank

S = InferenceTask.Status
WINDOW = timedelta(days=7)
WEEK = timedelta(days=7)
GENERATIVE_KINDS = ("chat", "completions", "response")
F = ModelDrift.Figure


# --- weeks ----------------------------------------------------------------------------------------


def week_of(moment: datetime) -> date:
    """The Monday (UTC) of the week ``moment`` falls in."""
    day = moment.astimezone(UTC).date()
    return day - timedelta(days=day.weekday())


def week_bounds(week_start: date) -> tuple[datetime, datetime]:
    start = datetime.combine(week_start, time(0), tzinfo=UTC)
    return start, start + WEEK


def records(model: str) -> QuerySet[InferenceTask]:
    """The model's finished generative inferences that a model ran (the figures' population)."""
    return InferenceTask.objects.filter(
        model_name=model, kind__in=GENERATIVE_KINDS, cached=False, status__in=(S.COMPLETED, S.FAILED)
    )


def _answers(qs: QuerySet[InferenceTask]) -> QuerySet[InferenceTask]:
    """Completed answers whose features were recorded (not those from before they were kept)."""
    return qs.filter(status=S.COMPLETED, answer_chars__isnull=False)


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def week_figures(model: str, week_start: date) -> dict[str, Any]:
    """The ``ModelQualityWeek`` fields of ``model`` over the week starting ``week_start``."""
    start, end = week_bounds(week_start)
    qs = records(model).filter(created_at__gte=start, created_at__lt=end).order_by()
    counts = qs.aggregate(
        requests=Count("pk"),
        failures=Count("pk", filter=Q(status=S.FAILED)),
        answers=Count("pk", filter=Q(status=S.COMPLETED, answer_chars__isnull=False)),
        refusals=Count("pk", filter=Q(status=S.COMPLETED, answer_chars__isnull=False, refused=True)),
        prompt_tokens=Sum("prompt_tokens"),
        completion_tokens=Sum("completion_tokens"),
    )
    everything = {"all": Q()}
    chars = percentiles(_answers(qs), "answer_chars", everything)[None]
    latency = percentiles(qs.filter(status=S.COMPLETED), "latency_ms", everything)[None]
    ratings = Feedback.objects.filter(model_name=model, created_at__gte=start, created_at__lt=end)
    up = down = 0
    reasons: Counter[str] = Counter()
    for rating, codes in ratings.values_list("rating", "reasons"):
        if rating == Feedback.Rating.UP:
            up += 1
        else:
            down += 1
        reasons.update(code for code in codes or () if isinstance(code, str))
    return {
        "requests": counts["requests"],
        "failures": counts["failures"],
        "answers": counts["answers"],
        "refusals": counts["refusals"],
        "prompt_tokens": counts["prompt_tokens"] or 0,
        "completion_tokens": counts["completion_tokens"] or 0,
        "answer_chars_p50": _int(chars["all_p50"]),
        "answer_chars_p95": _int(chars["all_p95"]),
        "latency_p50_ms": _int(latency["all_p50"]),
        "latency_p95_ms": _int(latency["all_p95"]),
        "ratings_up": up,
        "ratings_down": down,
        "reasons": dict(sorted(reasons.items())),
    }


def record_week(model: str, week_start: date, now: datetime | None = None) -> ModelQualityWeek:
    """Compute and keep (replacing what was kept) ``model``'s figures of one week."""
    row, _ = ModelQualityWeek.objects.update_or_create(
        model_name=model,
        week_start=week_start,
        defaults={**week_figures(model, week_start), "computed_at": now or timezone.now()},
    )
    return row


# --- drift ----------------------------------------------------------------------------------------


@dataclass
class Check:
    """One figure's test of the window against the baseline, and its verdict."""

    figure: str
    test: str
    n_window: int
    n_baseline: int
    threshold: float
    alpha: float
    baseline_value: float | None = None
    window_value: float | None = None
    effect: float | None = None
    statistic: float | None = None
    p_value: float | None = None
    drifted: bool = False
    verdict: str = ""


@dataclass
class Windows:
    window_start: datetime
    window_end: datetime
    baseline_start: datetime

    @classmethod
    def ending(cls, now: datetime) -> Windows:
        start = now - WINDOW
        return cls(start, now, start - WEEK * settings.MEDAI_DRIFT_BASELINE_WEEKS)


def _sample(qs: QuerySet[InferenceTask], name: str) -> list[int]:
    """Up to MEDAI_QUALITY_SAMPLE_MAX values of ``name``, taken in record-id order: the ids are
    random UUIDs, so the sample is drawn without regard to time."""
    cap = settings.MEDAI_QUALITY_SAMPLE_MAX
    return list(qs.filter(**{f"{name}__isnull": False}).order_by("id").values_list(name, flat=True)[:cap])


def _fmt(figure: str, value: float | None) -> str:
    if value is None:
        return "-"
    if figure in (F.RATING, F.REFUSAL):
        return f"{100 * value:.1f}%"
    return f"{value:.0f}" + (" ms" if figure == F.LATENCY else " chars")


def _change(figure: str, effect: float) -> str:
    if figure in (F.RATING, F.REFUSAL):
        return f"{100 * effect:+.1f} points"
    return f"{100 * effect:+.0f}%"


def _judge(check: Check, label: str) -> Check:
    """The verdict: drift only when p < alpha and the change reaches the threshold."""
    if check.p_value is None:
        return check
    moved = f"{_fmt(check.figure, check.baseline_value)} → {_fmt(check.figure, check.window_value)}" + (
        f" ({_change(check.figure, check.effect)})" if check.effect is not None else ""
    )
    big = check.effect is not None and abs(check.effect) >= check.threshold
    if check.p_value < check.alpha and big:
        check.drifted = True
        check.verdict = f"DRIFT: {label} {moved}, p = {check.p_value:.2g} < {check.alpha:g}"
    elif check.p_value < check.alpha:
        check.verdict = (
            f"stable: {label} {moved}, p = {check.p_value:.2g} but the change is under "
            f"{_change(check.figure, check.threshold).lstrip('+')}"
        )
    else:
        check.verdict = f"stable: {label} {moved}, p = {check.p_value:.2g} ≥ {check.alpha:g}"
    return check


def _too_few(check: Check, what: str) -> Check:
    check.verdict = (
        f"not tested: {check.n_window} {what} in the window, {check.n_baseline} in the baseline "
        f"(at least {settings.MEDAI_DRIFT_MIN_SAMPLES} each)"
    )
    return check


def _rank_check(figure: str, label: str, window: list[int], baseline: list[int], threshold: float) -> Check:
    check = Check(figure, "Mann-Whitney U", len(window), len(baseline), threshold, settings.MEDAI_DRIFT_ALPHA)
    least = settings.MEDAI_DRIFT_MIN_SAMPLES
    if len(window) < least or len(baseline) < least:
        return _too_few(check, "answers")
    check.baseline_value, check.window_value = nearest_rank(baseline, 0.5), nearest_rank(window, 0.5)
    check.statistic, check.p_value = mann_whitney(window, baseline)
    if check.baseline_value:
        check.effect = ((check.window_value or 0) - check.baseline_value) / check.baseline_value
    elif check.window_value:
        check.effect = math.inf  # from a median of 0 to something: any relative change is infinite
    else:
        check.effect = 0.0
    return _judge(check, label)


def _proportion_check(
    figure: str, label: str, window: tuple[int, int], baseline: tuple[int, int], threshold: float, what: str
) -> Check:
    (x1, n1), (x2, n2) = window, baseline
    check = Check(figure, "two-proportion z", n1, n2, threshold, settings.MEDAI_DRIFT_ALPHA)
    least = settings.MEDAI_DRIFT_MIN_SAMPLES
    if n1 < least or n2 < least:
        return _too_few(check, what)
    check.window_value, check.baseline_value = x1 / n1, x2 / n2
    check.test, check.statistic, check.p_value = compare_proportions(x1, n1, x2, n2)
    check.effect = check.window_value - check.baseline_value
    return _judge(check, label)


def _ratings(model: str, since: datetime, until: datetime) -> tuple[int, int]:
    """(thumbs up, ratings) of ``model`` given in [since, until)."""
    counts = Feedback.objects.filter(model_name=model, created_at__gte=since, created_at__lt=until).aggregate(
        up=Count("pk", filter=Q(rating=Feedback.Rating.UP)), n=Count("pk")
    )
    return counts["up"], counts["n"]


def _refusals(qs: QuerySet[InferenceTask]) -> tuple[int, int]:
    counts = _answers(qs).order_by().aggregate(refused=Count("pk", filter=Q(refused=True)), n=Count("pk"))
    return counts["refused"], counts["n"]


def drift_checks(model: str, windows: Windows) -> list[Check]:
    """The four tests of ``model``'s window against its baseline (nothing is kept: ``check_drift``)."""
    mine = records(model)
    window = mine.filter(created_at__gte=windows.window_start, created_at__lt=windows.window_end)
    baseline = mine.filter(created_at__gte=windows.baseline_start, created_at__lt=windows.window_start)
    answers_w, answers_b = _answers(window), _answers(baseline)
    return [
        _rank_check(
            F.ANSWER_LENGTH,
            "median answer length",
            _sample(answers_w, "answer_chars"),
            _sample(answers_b, "answer_chars"),
            settings.MEDAI_DRIFT_LENGTH_CHANGE,
        ),
        _rank_check(
            F.LATENCY,
            "median latency",
            _sample(window.filter(status=S.COMPLETED), "latency_ms"),
            _sample(baseline.filter(status=S.COMPLETED), "latency_ms"),
            settings.MEDAI_DRIFT_LATENCY_CHANGE,
        ),
        _proportion_check(
            F.RATING,
            "thumbs-up rate",
            _ratings(model, windows.window_start, windows.window_end),
            _ratings(model, windows.baseline_start, windows.window_start),
            settings.MEDAI_DRIFT_RATING_CHANGE,
            "ratings",
        ),
        _proportion_check(
            F.REFUSAL,
            "refusal rate",
            _refusals(window),
            _refusals(baseline),
            settings.MEDAI_DRIFT_REFUSAL_CHANGE,
            "answers",
        ),
    ]


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else (1e9 if value > 0 else -1e9)


def check_drift(model: str, now: datetime | None = None) -> list[ModelDrift]:
    """Test ``model``'s last 7 days against its baseline and keep the verdicts (the week's earlier
    check of the same figure is replaced)."""
    now = now or timezone.now()
    windows = Windows.ending(now)
    rows = []
    for check in drift_checks(model, windows):
        row, _ = ModelDrift.objects.update_or_create(
            model_name=model,
            week_start=week_of(now),
            figure=check.figure,
            defaults={
                "test": check.test,
                "window_start": windows.window_start,
                "window_end": windows.window_end,
                "baseline_start": windows.baseline_start,
                "n_window": check.n_window,
                "n_baseline": check.n_baseline,
                "baseline_value": check.baseline_value,
                "window_value": check.window_value,
                "effect": _finite(check.effect),  # a database column holds no infinity everywhere
                "threshold": check.threshold,
                "statistic": check.statistic,
                "p_value": check.p_value,
                "alpha": check.alpha,
                "drifted": check.drifted,
                "verdict": check.verdict[:300],
                "checked_at": now,
            },
        )
        rows.append(row)
    return rows


# --- the whole run --------------------------------------------------------------------------------


@dataclass
class ModelReport:
    model: str
    weeks: list[ModelQualityWeek] = field(default_factory=list)
    drift: list[ModelDrift] = field(default_factory=list)

    @property
    def drifted(self) -> list[ModelDrift]:
        return [d for d in self.drift if d.drifted]


def models_seen(since: datetime) -> list[str]:
    """Models that answered (or were rated) since ``since``."""
    answered = (
        InferenceTask.objects.filter(created_at__gte=since, kind__in=GENERATIVE_KINDS)
        .exclude(model_name="")
        .order_by()
        .values_list("model_name", flat=True)
        .distinct()
    )
    rated = (
        Feedback.objects.filter(created_at__gte=since)
        .exclude(model_name="")
        .order_by()
        .values_list("model_name", flat=True)
        .distinct()
    )
    return sorted(set(answered) | set(rated))


def _first_week(model: str) -> date | None:
    first = records(model).order_by().aggregate(first=Min("created_at"))["first"]
    rated = Feedback.objects.filter(model_name=model).order_by().aggregate(first=Min("created_at"))["first"]
    found = [t for t in (first, rated) if t is not None]
    return week_of(min(found)) if found else None


def assess(*, now: datetime | None = None, model: str | None = None, recompute: bool = False) -> list[ModelReport]:
    """The schedule's work: for each model seen in its baseline and window (or ``model``), its
    weekly figures (the current week and the one before always; earlier weeks of the baseline when
    they have no row yet; every week since its first record with ``recompute``), then its drift
    checks. One transaction per model."""
    now = now or timezone.now()
    windows = Windows.ending(now)
    current = week_of(now)
    reports = []
    for name in [model] if model else models_seen(windows.baseline_start):
        first = (_first_week(name) if recompute else week_of(windows.baseline_start)) or current
        weeks = []
        day = first
        while day <= current:
            weeks.append(day)
            day += WEEK
        with transaction.atomic():
            kept = set(
                ModelQualityWeek.objects.filter(model_name=name, week_start__in=weeks).values_list(
                    "week_start", flat=True
                )
            )
            report = ModelReport(name)
            for week in weeks:
                if recompute or week not in kept or week >= current - WEEK:
                    report.weeks.append(record_week(name, week, now))
            report.weeks = list(ModelQualityWeek.objects.filter(model_name=name, week_start__in=weeks))
            report.drift = check_drift(name, now)
        reports.append(report)
    return reports


def latest_drift(since: datetime) -> list[ModelDrift]:
    """Each model's newest verdict of each figure checked since ``since`` (what the metric shows)."""
    newest: dict[tuple[str, str], ModelDrift] = {}
    for row in ModelDrift.objects.filter(checked_at__gte=since).order_by("model_name", "figure", "-checked_at"):
        newest.setdefault((row.model_name, row.figure), row)
    return list(newest.values())
