"""Quality and drift (apps/inference/quality.py): a model's weekly figures, right on a small
hand-checked week; a seeded shift in its last 7 days (shorter answers, fewer thumbs up) flagged as
drift against its 4 baseline weeks, kept, printed by ``manage.py quality`` and exported as
``medai_model_drift``; the same model without the shift not flagged at the stated alpha."""

from __future__ import annotations

import random
import subprocess
from datetime import UTC, date, datetime, timedelta
from io import StringIO
from unittest import mock

import pytest
import yaml
from django.core.management import call_command
from django.test import Client
from django_q.models import Schedule
from prometheus_client import CollectorRegistry, generate_latest

from apps.inference import quality, significance
from apps.inference.metrics import QualityCollector
from apps.inference.models import ModelDrift, ModelQualityWeek
from tests.conftest import PASSWORD, register_model
from tests.inference.quality_helpers import answer, rate, seed_model

pytestmark = pytest.mark.django_db

# A Thursday noon: its week starts on Monday 2026-11-30.
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def _drift(rows: list[ModelDrift]) -> dict[str, ModelDrift]:
    return {r.figure: r for r in rows}


def test_a_weeks_figures_are_counted_from_its_records(demo):
    monday = NOW - timedelta(days=3, hours=12)  # 2026-11-30 00:00
    a = answer(demo, monday + timedelta(hours=1), chars=100, latency_ms=10, prompt_tokens=5, completion_tokens=50)
    b = answer(demo, monday + timedelta(hours=2), chars=200, latency_ms=20, refused=True, completion_tokens=10)
    c = answer(demo, monday + timedelta(hours=3), chars=300, latency_ms=30)
    answer(demo, monday + timedelta(hours=4), status="failed", latency_ms=9000)  # a failure: counted, no answer
    answer(demo, monday + timedelta(hours=5), chars=5, cached=True)  # the response cache's: no model ran
    answer(demo, monday + timedelta(hours=5), chars=None, kind="embeddings")  # not a generated answer
    answer(demo, monday - timedelta(minutes=1), chars=9999)  # the week before
    answer(demo, monday + timedelta(hours=6), chars=7777, model="other")  # another model
    rate(a, "up", monday + timedelta(hours=7))
    rate(b, "down", monday + timedelta(hours=7), ("wrong", "unsafe"))
    rate(c, "up", monday + timedelta(hours=8), ("incomplete",))

    week = quality.record_week("smollm2", quality.week_of(NOW), NOW)

    assert week.week_start == date(2026, 11, 30)
    assert (week.requests, week.failures, week.answers, week.refusals) == (4, 1, 3, 1)
    assert (week.answer_chars_p50, week.answer_chars_p95) == (200, 300)  # nearest rank of 100, 200, 300
    assert (week.latency_p50_ms, week.latency_p95_ms) == (20, 30)  # completed answers only
    assert (week.prompt_tokens, week.completion_tokens) == (5 + 20 + 20 + 20, 50 + 10 + 100 + 100)
    assert (week.ratings_up, week.ratings_down, week.rating_rate) == (2, 1, 2 / 3)
    assert week.refusal_rate == 1 / 3 and week.failure_rate == 1 / 4
    assert week.reasons == {"incomplete": 1, "unsafe": 1, "wrong": 1}


def test_a_seeded_shift_in_the_last_week_is_flagged_as_drift(demo):
    register_model("smollm2", "http://127.0.0.1:9/v1")
    seed_model(demo, NOW, seed=7, last_week={"length": (300, 80), "up_rate": 0.3})

    [report] = quality.assess(now=NOW)

    drift = _drift(report.drift)
    assert drift["answer_length"].drifted and drift["rating"].drifted, {f: d.verdict for f, d in drift.items()}
    assert not drift["latency"].drifted and not drift["refusal"].drifted
    length = drift["answer_length"]
    assert length.p_value is not None and length.p_value < 0.01
    assert length.effect is not None and length.effect < -0.25  # the median fell by more than a quarter
    assert (length.n_window, length.n_baseline) == (60, 240)
    assert length.verdict.startswith("DRIFT: median answer length")
    rating = drift["rating"]
    assert rating.effect is not None and rating.effect < -0.10 and rating.p_value is not None and rating.p_value < 0.01
    assert (rating.window_start, rating.window_end, rating.baseline_start) == (
        NOW - timedelta(days=7),
        NOW,
        NOW - timedelta(days=35),
    )
    # kept: one verdict per figure for the week of the check, and the weeks' figures
    assert ModelDrift.objects.filter(model_name="smollm2", drifted=True).count() == 2
    weeks = {w.week_start: w for w in ModelQualityWeek.objects.filter(model_name="smollm2")}
    assert len(weeks) == 6  # the baseline's weeks and the window's, Monday to Monday
    assert sum(w.answers for w in weeks.values()) == 300


def test_the_drift_is_the_metric_every_web_process_exports(demo):
    register_model("smollm2", "http://127.0.0.1:9/v1")
    register_model("quiet", "http://127.0.0.1:9/v1")  # enabled, never checked: 0, not absent
    seed_model(demo, NOW, seed=7, last_week={"length": (300, 80), "up_rate": 0.3})
    quality.assess(now=NOW)
    ModelDrift.objects.update(checked_at=datetime.now(UTC))  # as if just checked (the metric shows fresh verdicts)

    registry = CollectorRegistry()
    registry.register(QualityCollector())
    values = {
        (s.name, s.labels.get("model"), s.labels.get("figure")): s.value
        for family in registry.collect()
        for s in family.samples
    }
    assert values[("medai_model_drift", "smollm2", "answer_length")] == 1
    assert values[("medai_model_drift", "smollm2", "rating")] == 1
    assert values[("medai_model_drift", "smollm2", "latency")] == 0
    assert values[("medai_model_drift", "quiet", "answer_length")] == 0
    assert values[("medai_model_drift_p_value", "smollm2", "answer_length")] < 0.01
    assert values[("medai_model_drift_effect", "smollm2", "answer_length")] < -0.25
    assert ("medai_model_drift_p_value", "quiet", "answer_length") not in values
    assert b'medai_model_drift{figure="answer_length",model="smollm2"} 1.0' in generate_latest(registry)


def test_stable_data_is_not_flagged_at_the_stated_alpha(demo):
    seed_model(demo, NOW, seed=11)

    [report] = quality.assess(now=NOW)

    drift = _drift(report.drift)
    assert not report.drifted, {f: d.verdict for f, d in drift.items()}
    for figure in ("answer_length", "latency", "rating", "refusal"):
        assert drift[figure].p_value is not None, drift[figure].verdict  # tested, not skipped
        assert drift[figure].verdict.startswith("stable"), drift[figure].verdict


def _flag_rate(draw, runs: int = 400) -> float:
    return sum(draw().drifted for _ in range(runs)) / runs


@pytest.mark.django_db(False)
def test_false_alarms_stay_under_alpha_and_real_shifts_are_found():
    """The decision rule on simulated draws (no database): without a shift each figure flags at
    most at about alpha; with the seeded shift's size it flags nearly always."""
    rng = random.Random(2026)

    def lengths(n: int, mu: float) -> list[int]:
        return [max(1, int(rng.gauss(mu, 150))) for _ in range(n)]

    def rates(n: int, p: float) -> tuple[int, int]:
        return sum(rng.random() < p for _ in range(n)), n

    length = quality.F.ANSWER_LENGTH
    stable_length = _flag_rate(lambda: quality._rank_check(length, "l", lengths(60, 800), lengths(240, 800), 0.25))
    shifted_length = _flag_rate(lambda: quality._rank_check(length, "l", lengths(60, 550), lengths(240, 800), 0.25))
    stable_rating = _flag_rate(
        lambda: quality._proportion_check(quality.F.RATING, "r", rates(30, 0.8), rates(120, 0.8), 0.1, "ratings")
    )
    shifted_rating = _flag_rate(
        lambda: quality._proportion_check(quality.F.RATING, "r", rates(30, 0.3), rates(120, 0.8), 0.1, "ratings")
    )
    rare = _flag_rate(  # a 2% refusal rate: expected counts under 5, Fisher's exact test
        lambda: quality._proportion_check(quality.F.REFUSAL, "f", rates(60, 0.02), rates(240, 0.02), 0.05, "answers")
    )
    assert stable_length <= 0.02 and stable_rating <= 0.02 and rare <= 0.02, (stable_length, stable_rating, rare)
    assert shifted_length >= 0.9 and shifted_rating >= 0.9, (shifted_length, shifted_rating)


def test_rare_refusals_are_tested_exactly(demo):
    """5 refusals in 60 answers against 2 in 240: the z-test's expected counts are under 5, so
    Fisher's exact test decides (the z-test would give p ~ 1e-4, Fisher's 0.004)."""
    week = NOW - timedelta(days=3)
    for i in range(60):
        answer(demo, week + timedelta(minutes=i), refused=i < 5)
    for i in range(240):
        answer(demo, week - timedelta(days=7 + i % 21, minutes=i), refused=i < 2)
    check = _drift(quality.check_drift("smollm2", NOW))["refusal"]
    assert check.test == "Fisher's exact" and check.statistic is None
    assert check.p_value == pytest.approx(significance.fisher_exact(5, 60, 2, 240))
    assert 0.001 < check.p_value < 0.01


def test_a_significant_but_small_change_is_not_drift(demo, settings):
    """p < alpha alone does not flag: the change must reach the figure's threshold too."""
    seed_model(demo, NOW, seed=7, per_week=400, rated_per_week=0, last_week={"length": (740, 150)})
    [report] = quality.assess(now=NOW)
    length = _drift(report.drift)["answer_length"]
    assert length.p_value is not None and length.p_value < 0.01  # 400 a week: an 8% change is significant
    assert not length.drifted and "under" in length.verdict


def test_too_few_samples_are_not_tested(demo):
    seed_model(demo, NOW, seed=3, per_week=10, rated_per_week=5)
    [report] = quality.assess(now=NOW)
    for row in report.drift:
        assert row.p_value is None and not row.drifted and row.verdict.startswith("not tested"), row.verdict


def test_the_check_of_a_week_replaces_its_earlier_one(demo):
    seed_model(demo, NOW, seed=7, last_week={"length": (300, 80)})
    quality.assess(now=NOW - timedelta(hours=1))
    quality.assess(now=NOW)
    assert ModelDrift.objects.filter(model_name="smollm2").count() == 4
    assert set(ModelDrift.objects.values_list("checked_at", flat=True)) == {NOW}


def test_the_command_prints_the_weeks_and_the_verdicts(demo):
    seed_model(demo, NOW, seed=7, last_week={"length": (300, 80), "up_rate": 0.3})
    ModelQualityWeek.objects.create(model_name="smollm2", week_start=date(2026, 11, 2), requests=999, computed_at=NOW)
    out = StringIO()
    with mock.patch("apps.inference.quality.timezone.now", return_value=NOW):
        call_command("quality", "--model", "smollm2", "--recompute", stdout=out)
    text = out.getvalue()
    assert "smollm2" in text and "2026-11-30" in text and "2026-10-26" in text
    assert "999" not in text  # --recompute rewrote the week from its records
    assert "answer_length (Mann-Whitney U): DRIFT" in text
    assert "rating        (two-proportion z): DRIFT" in text
    assert "1 model(s) assessed, 2 figure(s) drifted" in text


def test_the_hourly_schedule_is_registered():
    schedule = Schedule.objects.get(func="apps.inference.tasks.assess_quality")
    assert (schedule.schedule_type, schedule.minutes, schedule.repeats) == ("I", 60, -1)


@pytest.mark.django_db(False)
def test_fishers_exact_test_matches_known_tables():
    assert significance.fisher_exact(3, 3, 0, 3) == pytest.approx(0.1)  # the lady tasting tea's 2x2 of 3
    assert significance.fisher_exact(1, 2, 1, 2) == pytest.approx(1.0)
    assert significance.fisher_exact(8, 10, 1, 6) == pytest.approx(0.03497, abs=1e-5)  # SciPy's documented example
    assert significance.fisher_exact(10, 12, 2, 12) == pytest.approx(2 * (66 * 66 + 12 * 12 + 1) / 2704156)


def test_the_admin_shows_each_week_with_its_figures_and_drift_verdicts(demo, django_user_model):
    seed_model(demo, NOW, seed=7, last_week={"length": (300, 80), "up_rate": 0.3})
    quality.assess(now=NOW)
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("root", password=PASSWORD))

    listing = client.get("/admin/inference/modelqualityweek/")
    assert listing.status_code == 200
    html = listing.content.decode()
    assert "smollm2" in html and "DRIFT" in html and "answer length (characters), thumbs-up rate" in html
    week = ModelQualityWeek.objects.get(model_name="smollm2", week_start=date(2026, 11, 30))
    page = client.get(f"/admin/inference/modelqualityweek/{week.pk}/change/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Mann-Whitney U" in text and "two-proportion z" in text
    assert "DRIFT: median answer length" in text and "stable: median latency" in text
    assert "240 → 60" in text  # baseline and window samples
    assert client.get("/admin/inference/modelqualityweek/add/").status_code == 403  # read-only
    earlier = ModelQualityWeek.objects.get(model_name="smollm2", week_start=date(2026, 11, 2))
    assert (
        "No drift check ran in this week."
        in client.get(f"/admin/inference/modelqualityweek/{earlier.pk}/change/").content.decode()
    )


def test_the_drift_alert_fires_on_the_metric_of_a_seeded_shift(demo, tmp_path):
    """From seeded records to the alert: the shift's ``medai_model_drift`` samples, as a scrape
    exports them, fed to promtool with the shipped rules: MedaiModelDrift fires for the figures
    that drifted and for no other."""
    from tests.test_observability_config import ALERTS, promtool

    register_model("smollm2", "http://127.0.0.1:9/v1")
    seed_model(demo, NOW, seed=7, last_week={"length": (300, 80), "up_rate": 0.3})
    quality.assess(now=NOW)
    ModelDrift.objects.update(checked_at=datetime.now(UTC))
    registry = CollectorRegistry()
    registry.register(QualityCollector())
    series = [
        {
            "series": f'medai_model_drift{{instance="web-1:8000", model="{s.labels["model"]}", figure="{s.labels["figure"]}"}}',
            "values": f"{s.value:g}x5",
        }
        for family in registry.collect()
        for s in family.samples
        if s.name == "medai_model_drift"
    ]
    assert len(series) == 4
    [rule] = [
        r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"] if r["alert"] == "MedaiModelDrift"
    ]
    description = rule["annotations"]["description"].replace("{{ $labels.model }}", "smollm2")
    expected = [
        {
            "exp_labels": {"severity": "warning", "model": "smollm2", "figure": figure},
            "exp_annotations": {"summary": f"smollm2: {figure} drifted from its baseline", "description": description},
        }
        for figure in ("answer_length", "rating")
    ]
    tests = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [{"eval_time": "2m", "alertname": "MedaiModelDrift", "exp_alerts": expected}],
            }
        ],
    }
    (tmp_path / "drift_test.yml").write_text(yaml.safe_dump(tests))
    result = subprocess.run(
        [promtool(), "test", "rules", "drift_test.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
