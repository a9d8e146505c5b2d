"""Quality monitoring's rows (imported by apps.inference.models, so nothing of the app is imported
here): a model's figures per week, and the drift verdicts of its figures against its baseline.

Both are computed from what outlives retention (``InferenceTask`` metadata: status, timings,
tokens, the answer's length and refusal flag; ``Feedback``: rating and reason codes), never from
prompts or answers, so they hold no PHI and stay after the content is purged. They are derived
data: ``apps.inference.quality`` writes them (the hourly schedule, ``manage.py quality``) and can
write them again from the records at any time (``--recompute``).
"""

from __future__ import annotations

from django.db import models


class ModelQualityWeek(models.Model):
    """One model's figures over one week (Monday 00:00 UTC to the next; the current week so far).
    The rates and percentiles are kept with the counts they come from, so a reader can tell 1 of 2
    from 500 of 1000."""

    model_name = models.CharField(max_length=100, help_text="The model that answered.")
    week_start = models.DateField(help_text="The Monday (UTC) the week starts on.")
    requests = models.PositiveIntegerField(default=0, help_text="Finished inferences (completed or failed).")
    failures = models.PositiveIntegerField(default=0)
    answers = models.PositiveIntegerField(default=0, help_text="Completed answers whose length was recorded.")
    refusals = models.PositiveIntegerField(default=0, help_text="Of those, refusals.")
    answer_chars_p50 = models.PositiveIntegerField(null=True, blank=True)
    answer_chars_p95 = models.PositiveIntegerField(null=True, blank=True)
    latency_p50_ms = models.PositiveIntegerField(null=True, blank=True)
    latency_p95_ms = models.PositiveIntegerField(null=True, blank=True)
    prompt_tokens = models.PositiveBigIntegerField(default=0, help_text="Tokens in, summed.")
    completion_tokens = models.PositiveBigIntegerField(default=0, help_text="Tokens out, summed.")
    ratings_up = models.PositiveIntegerField(default=0)
    ratings_down = models.PositiveIntegerField(default=0)
    reasons = models.JSONField(default=dict, blank=True, help_text="Reason codes of the ratings: {code: count}.")
    computed_at = models.DateTimeField()

    class Meta:
        ordering = ["model_name", "-week_start"]
        constraints = [models.UniqueConstraint(fields=["model_name", "week_start"], name="quality_week_once")]
        verbose_name = "model quality week"

    def __str__(self) -> str:
        return f"{self.model_name}, week of {self.week_start}"

    @property
    def rated(self) -> int:
        return self.ratings_up + self.ratings_down

    @property
    def rating_rate(self) -> float | None:
        """Thumbs up / (up + down); None without ratings."""
        return self.ratings_up / self.rated if self.rated else None

    @property
    def refusal_rate(self) -> float | None:
        return self.refusals / self.answers if self.answers else None

    @property
    def failure_rate(self) -> float | None:
        return self.failures / self.requests if self.requests else None


class ModelDrift(models.Model):
    """The verdict of one figure of one model: its last 7 days (``window_*``) against the baseline
    of the weeks before them (``baseline_start`` to ``window_start``). The latest check of a week
    replaces the week's earlier one (``week_start``: the week the check ran in), so each week keeps
    its last verdict and the newest is the metric's (``medai_model_drift``)."""

    class Figure(models.TextChoices):
        ANSWER_LENGTH = "answer_length", "answer length (characters)"
        LATENCY = "latency", "latency (ms, end to end)"
        RATING = "rating", "thumbs-up rate"
        REFUSAL = "refusal", "refusal rate"

    model_name = models.CharField(max_length=100)
    week_start = models.DateField(help_text="The Monday (UTC) of the week the check ran in.")
    figure = models.CharField(max_length=16, choices=Figure.choices)
    test = models.CharField(max_length=64, help_text="The test: Mann-Whitney U or the two-proportion z-test.")
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    baseline_start = models.DateTimeField()
    n_window = models.PositiveIntegerField(default=0)
    n_baseline = models.PositiveIntegerField(default=0)
    baseline_value = models.FloatField(null=True, blank=True, help_text="The baseline's median or rate.")
    window_value = models.FloatField(null=True, blank=True, help_text="The window's median or rate.")
    effect = models.FloatField(
        null=True, blank=True, help_text="The change: relative for medians, absolute points for rates."
    )
    threshold = models.FloatField(help_text="The change at least needed to flag drift.")
    statistic = models.FloatField(null=True, blank=True, help_text="U or z.")
    p_value = models.FloatField(null=True, blank=True, help_text="None: not tested (too few samples).")
    alpha = models.FloatField()
    drifted = models.BooleanField(default=False)
    verdict = models.CharField(max_length=300)
    checked_at = models.DateTimeField()

    class Meta:
        ordering = ["model_name", "-week_start", "figure"]
        constraints = [
            models.UniqueConstraint(fields=["model_name", "week_start", "figure"], name="drift_check_once_a_week")
        ]
        indexes = [models.Index(fields=["-checked_at"], name="drift_recent")]

    def __str__(self) -> str:
        return f"{self.model_name} {self.figure}: {'drift' if self.drifted else 'stable'}"
