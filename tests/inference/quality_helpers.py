"""Seeded records for the quality and drift tests: a model's answers and ratings, written as the
pipeline leaves them once their content is purged (metadata only: status, timings, tokens, the
answer's length and refusal flag; the rating against the model)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from apps.accounts.models import Location
from apps.inference.models import Feedback, InferenceTask

S = InferenceTask.Status


def answer(
    location: Location,
    at: datetime,
    *,
    model: str = "smollm2",
    chars: int | None = 500,
    latency_ms: int = 1000,
    refused: bool = False,
    status: str = S.COMPLETED,
    kind: str = "chat",
    cached: bool = False,
    prompt_tokens: int = 20,
    completion_tokens: int = 100,
    arm: str = "",
    agent_type: str = "MedicalQA",
) -> InferenceTask:
    return InferenceTask.objects.create(
        mode=InferenceTask.Mode.SYNC,
        kind=kind,
        status=status,
        location=location,
        agent_type=agent_type,
        model_name=model,
        arm=arm,
        cached=cached,
        answer_chars=chars if status == S.COMPLETED else None,
        finish_reason="stop" if status == S.COMPLETED else "",
        refused=refused,
        latency_ms=latency_ms,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        created_at=at,
        finished_at=at,
        content_purged_at=at,
    )


def rate(task: InferenceTask, rating: str, at: datetime, reasons: tuple[str, ...] = (), user=None) -> Feedback:
    return Feedback.objects.create(
        task=task,
        user=user,
        location=task.location,
        model_name=task.model_name,
        agent_type=task.agent_type,
        arm=task.arm,
        rating=rating,
        reasons=list(reasons),
        created_at=at,
        updated_at=at,
    )


def seed_model(
    location: Location,
    now: datetime,
    *,
    seed: int,
    model: str = "smollm2",
    weeks: int = 5,
    per_week: int = 60,
    rated_per_week: int = 30,
    length: tuple[float, float] = (800, 150),
    latency: tuple[float, float] = (1200, 200),
    up_rate: float = 0.8,
    refusal_rate: float = 0.02,
    last_week: dict[str, object] | None = None,
) -> None:
    """``weeks`` weeks of answers before ``now`` (the last 7 days the last of them), drawn from the
    same distributions (a normal length and latency, a thumbs-up and a refusal probability), except
    that ``last_week`` may change any of them for the last 7 days: a seeded shift."""
    rng = random.Random(seed)
    for week in range(weeks):
        params = {"length": length, "latency": latency, "up_rate": up_rate, "refusal_rate": refusal_rate}
        if week == weeks - 1 and last_week:
            params.update(last_week)
        start = now - timedelta(days=7 * (weeks - week))
        for i in range(per_week):
            at = start + timedelta(seconds=rng.uniform(60, 7 * 86_400 - 60))
            mu, sd = params["length"]  # type: ignore[misc]
            lat_mu, lat_sd = params["latency"]  # type: ignore[misc]
            task = answer(
                location,
                at,
                model=model,
                chars=max(1, int(rng.gauss(mu, sd))),
                latency_ms=max(1, int(rng.gauss(lat_mu, lat_sd))),
                refused=rng.random() < params["refusal_rate"],  # type: ignore[operator]
            )
            if i < rated_per_week:
                up = rng.random() < params["up_rate"]  # type: ignore[operator]
                rate(task, "up" if up else "down", at + timedelta(seconds=30), () if up else ("wrong",))
