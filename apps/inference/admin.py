from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from apps.audit import display
from apps.inference import backends, experiments, retention, router
from apps.inference.models import (
    AgentRoute,
    AgentRouteEntry,
    Feedback,
    InferenceTask,
    LegalHold,
    ModelDrift,
    ModelEndpoint,
    ModelQualityWeek,
    Workflow,
    WorkflowRun,
    WorkflowStep,
)
from apps.inference.workflows import prompts, shapes


class ModelEndpointForm(forms.ModelForm):
    # Write-only: the stored key is never rendered back; leaving the box empty keeps it.
    api_key = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="The backend's own API key. Leave empty to keep the stored one.",
    )
    clear_api_key = forms.BooleanField(required=False, help_text="Remove the stored API key.")

    class Meta:
        model = ModelEndpoint
        fields = [
            "name",
            "kind",
            "base_url",
            "served_model_id",
            "api_key",
            "clear_api_key",
            "context_length",
            "vram_mb",
            "rank",
            "enabled",
            "supports_embeddings",
        ]

    def clean_api_key(self) -> str:
        value = self.cleaned_data.get("api_key") or ""
        if not value and self.instance.pk:
            return self.instance.api_key
        return value

    def save(self, commit: bool = True) -> ModelEndpoint:
        if self.cleaned_data.get("clear_api_key"):
            self.instance.api_key = ""
        return super().save(commit)


@admin.register(ModelEndpoint)
class ModelEndpointAdmin(admin.ModelAdmin):
    form = ModelEndpointForm
    list_display = [
        "name",
        "kind",
        "base_url",
        "backend_model",
        "has_api_key",
        "context_length",
        "vram_mb",
        "rank",
        "enabled",
    ]
    list_filter = ["kind", "enabled"]
    list_editable = ["rank", "enabled"]
    search_fields = ["name", "base_url", "served_model_id"]
    actions = ["test_connection"]

    @admin.display(boolean=True, description="API key set")
    def has_api_key(self, obj: ModelEndpoint) -> bool:
        return bool(obj.api_key)

    @admin.action(description="Test connection (ask the backend which models it serves)")
    def test_connection(self, request: HttpRequest, queryset: QuerySet[ModelEndpoint]) -> None:
        for ep in queryset:
            ok, detail = async_to_sync(backends.probe)(router.EndpointInfo.of(ep))
            level = messages.SUCCESS if ok else messages.ERROR
            self.message_user(request, f"{ep.name} ({ep.base_url}): {detail}", level)


class AgentRouteEntryInline(admin.TabularInline):
    model = AgentRouteEntry
    extra = 1
    ordering = ["position"]


@admin.register(AgentRoute)
class AgentRouteAdmin(admin.ModelAdmin):
    list_display = ["agent_type", "model_order", "enabled", "is_default", "description"]
    list_filter = ["enabled"]
    inlines = [AgentRouteEntryInline]
    readonly_fields = ["experiment"]

    @admin.display(description="models, in order")
    def model_order(self, obj: AgentRoute) -> str:
        parts = []
        for e in obj.entries.select_related("endpoint").order_by("position"):
            parts.append(f"{e.endpoint.name} ({e.weight})" if e.weight else e.endpoint.name)
        return " → ".join(parts)

    @admin.display(description="A/B split, last 30 days")
    def experiment(self, obj: AgentRoute) -> str:
        """Per arm: requests, failures, latency, ratings; the tests and their verdicts."""
        if obj.pk is None:
            return "-"
        result = experiments.compare(obj.agent_type)
        if not result.arms:
            return "No split requests yet (give two or more of its models a weight)."
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    a.arm,
                    a.requests,
                    "-" if a.failure_rate is None else f"{100 * a.failure_rate:.1f}%",
                    "-" if a.latency_pct(0.5) is None else f"{a.latency_pct(0.5)} / {a.latency_pct(0.95)} ms",
                    f"{a.ratings_up} up / {a.ratings_down} down",
                    "-" if a.up_rate is None else f"{100 * a.up_rate:.0f}%",
                )
                for a in result.arms
            ),
        )
        tests = format_html_join("", "<li><strong>{}</strong>: {}</li>", ((t.name, t.verdict) for t in result.tests))
        return format_html(
            '<table class="medai-arms"><thead><tr><th>arm</th><th>requests</th><th>failures</th>'
            "<th>latency p50 / p95</th><th>ratings</th><th>thumbs up</th></tr></thead><tbody>{}</tbody></table>"
            "<ul>{}</ul>",
            rows,
            tests,
        )


@admin.register(AgentRouteEntry)
class AgentRouteEntryAdmin(admin.ModelAdmin):
    """The models of every route: where an A/B arm is stopped or promoted (admin actions, audited)."""

    list_display = ["route", "endpoint", "position", "weight"]
    list_filter = ["route"]
    list_editable = ["weight"]
    actions = ["stop_arms", "promote_arm"]

    @admin.action(description="Stop these arms (weight 0: fallbacks only)")
    def stop_arms(self, request: HttpRequest, queryset: QuerySet[AgentRouteEntry]) -> None:
        for entry in queryset:
            entry.weight = 0
            entry.save(update_fields=["weight"])  # (save, not update: the routes' caches hear of it)
        self.message_user(request, f"Stopped {queryset.count()} arm(s).")

    @admin.action(description="Promote this arm (it takes all its route's traffic, tried first)")
    def promote_arm(self, request: HttpRequest, queryset: QuerySet[AgentRouteEntry]) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one arm to promote.", messages.ERROR)
            return
        winner = queryset.get()
        for entry in AgentRouteEntry.objects.filter(route=winner.route).exclude(pk=winner.pk):
            if entry.weight or entry.position <= winner.position:
                entry.weight = 0
                entry.position = entry.position + 1 if entry.position <= winner.position else entry.position
                entry.save(update_fields=["weight", "position"])
        winner.weight, winner.position = 0, 0
        winner.save(update_fields=["weight", "position"])
        self.message_user(request, f"{winner.endpoint} now serves all of {winner.route}; the split ended.")


class ContentPurgedFilter(admin.SimpleListFilter):
    """Whether a task still holds its prompt and result (its status is its outcome either way)."""

    title = "content"
    parameter_name = "content"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("kept", "kept"), ("purged", "purged")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[InferenceTask]) -> QuerySet[InferenceTask]:
        if self.value() in ("kept", "purged"):
            return queryset.filter(content_purged_at__isnull=self.value() == "kept")
        return queryset


@admin.register(InferenceTask)
class InferenceTaskAdmin(admin.ModelAdmin):
    list_display = [
        "task",
        "created_at",
        "mode",
        "status",
        "priority",
        "user",
        "location",
        "model_name",
        "tokens",
        "tool_calls",
        "wait",
        "run",
        "latency",
        "error_code",
        "content_purged_at",
    ]
    list_display_links = ["task"]
    list_filter = ["mode", "status", ContentPurgedFilter, "priority", "location", "model_name"]
    search_fields = ["id", "correlation_id", "user__username", "end_user"]
    date_hierarchy = "created_at"
    exclude = ["request", "result"]  # PHI is not shown in the admin list or form

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="task", ordering="id")
    def task(self, obj: InferenceTask) -> str:
        return display.short_id(obj.id)

    @admin.display(description="tokens in → out", ordering="prompt_tokens")
    def tokens(self, obj: InferenceTask) -> str:
        return f"{display.count(obj.prompt_tokens)} → {display.count(obj.completion_tokens)}"

    @admin.display(description="queue wait", ordering="queue_wait_ms")
    def wait(self, obj: InferenceTask) -> str:
        return display.ms(obj.queue_wait_ms)

    @admin.display(description="run", ordering="inference_ms")
    def run(self, obj: InferenceTask) -> str:
        return display.ms(obj.inference_ms)

    @admin.display(description="end to end", ordering="latency_ms")
    def latency(self, obj: InferenceTask) -> str:
        return display.ms(obj.latency_ms)


@admin.register(LegalHold)
class LegalHoldAdmin(admin.ModelAdmin):
    """Place a hold (the add form: one target and a reason) and release it (the action); never
    changed or deleted, so its history stays. Both go through apps.inference.retention (audited)."""

    list_display = ["id", "target", "reason", "placed_at", "placed_by", "released_at", "released_by"]
    list_filter = [("released_at", admin.EmptyFieldListFilter)]
    raw_id_fields = ["task", "user", "location"]
    readonly_fields = ["placed_at", "placed_by", "released_at", "released_by", "release_reason"]
    actions = ["release"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    @admin.display(description="on")
    def target(self, obj: LegalHold) -> str:
        if obj.task_id:
            return format_html("task {}", display.short_id(obj.task_id))
        return obj.target_label

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ["task", "user", "location", "reason", *(self.readonly_fields if obj else [])]

    def save_model(self, request: HttpRequest, obj: LegalHold, form: Any, change: bool) -> None:
        if change:
            return
        hold = retention.place_hold(
            request.user if request.user.is_authenticated else None,
            reason=obj.reason,
            task=obj.task,
            user=obj.user,
            location=obj.location,
        )
        obj.pk, obj.placed_at, obj.placed_by = hold.pk, hold.placed_at, hold.placed_by
        obj._state.adding = False

    @admin.action(description="Release the selected legal holds")
    def release(self, request: HttpRequest, queryset: Any) -> None:
        actor = request.user if request.user.is_authenticated else None
        n = sum(retention.release_hold(actor, h, reason="released in the admin") for h in queryset)
        self.message_user(request, f"Released {n} legal hold(s).")


@admin.register(Feedback)
class FeedbackAdmin(display.ReadOnlyAdmin, admin.ModelAdmin):
    """Clinicians' ratings of answers, by model and route: read-only (a rating is its author's,
    through POST /v1/feedback). The comment is not shown: it is free text that may name a patient,
    as the prompts and answers the task admin does not show either."""

    list_display = [
        "created_at",
        "rating",
        "reason_list",
        "has_comment",
        "model_name",
        "agent_type",
        "arm",
        "exchange",
        "user",
        "location",
    ]
    list_filter = ["rating", "model_name", "agent_type", "arm", "location"]
    search_fields = ["task__id", "user__username", "model_name", "agent_type"]
    date_hierarchy = "created_at"
    exclude = ["comment"]

    @admin.display(description="exchange", ordering="task_id")
    def exchange(self, obj: Feedback) -> str:
        return display.short_id(obj.task_id) if obj.task_id else "—"

    @admin.display(description="reasons")
    def reason_list(self, obj: Feedback) -> str:
        return ", ".join(obj.reasons or []) or "—"

    @admin.display(boolean=True, description="comment")
    def has_comment(self, obj: Feedback) -> bool:
        return bool(obj.comment)


# --- multi-agent workflows (apps/inference/workflows) ----------------------------------------------


class WorkflowStepFormSet(forms.BaseInlineFormSet):
    """The steps are checked together: names once each, placeholders naming earlier stages only."""

    def clean(self) -> None:
        super().clean()
        steps = [
            (f.cleaned_data["name"], f.cleaned_data.get("stage") or 0, f.cleaned_data.get("prompt") or "")
            for f in self.forms
            if getattr(f, "cleaned_data", None) and not f.cleaned_data.get("DELETE") and f.cleaned_data.get("name")
        ]
        found = prompts.problems(steps)
        if found:
            raise forms.ValidationError(found)


class WorkflowStepInline(admin.TabularInline):
    model = WorkflowStep
    formset = WorkflowStepFormSet
    extra = 1
    fields = ["stage", "name", "agent_type", "prompt", "max_tokens"]
    ordering = ["stage", "name"]


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    """A workflow and its steps: the steps of one stage run in parallel, a later stage consumes the
    earlier outputs. A run copies the steps when it starts: editing never changes a run under way."""

    list_display = ["name", "description", "active", "stages", "step_count", "updated_at"]
    list_filter = ["active"]
    search_fields = ["name", "description"]
    inlines = [WorkflowStepInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Workflow]:
        return super().get_queryset(request).prefetch_related("steps__agent_type")

    @admin.display(description="stages")
    def stages(self, obj: Workflow) -> str:
        by_stage: dict[int, list[str]] = {}
        for step in obj.steps.all():
            by_stage.setdefault(step.stage, []).append(step.agent_type.agent_type)
        return " → ".join(" + ".join(sorted(names)) for _, names in sorted(by_stage.items())) or "—"

    @admin.display(description="steps")
    def step_count(self, obj: Workflow) -> int:
        return len(obj.steps.all())


@admin.register(WorkflowRun)
class WorkflowRunAdmin(admin.ModelAdmin):
    """Runs, read-only, with each step's status and timings. The document and the result are PHI:
    not shown here (their owner reads them through the API, audited), as a task's prompt is not."""

    list_display = ["run", "workflow", "created_at", "status", "priority", "user", "location", "took", "error_code"]
    list_filter = ["status", "workflow", "priority", "location"]
    search_fields = ["task_batch__id", "correlation_id", "user__username"]
    date_hierarchy = "created_at"
    readonly_fields = (
        "workflow",
        "status",
        "priority",
        "stage",
        "user",
        "location",
        "correlation_id",
        "created_at",
        "finished_at",
        "deadline",
        "error_code",
        "waiting",
        "step_timings",
        "result_expires_at",
        "content_purged_at",
    )
    fields = readonly_fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[WorkflowRun]:
        return super().get_queryset(request).select_related("workflow", "user", "location").defer("document", "result")

    @admin.display(description="run", ordering="task_batch_id")
    def run(self, obj: WorkflowRun) -> str:
        return display.short_id(obj.pk)

    @admin.display(description="took")
    def took(self, obj: WorkflowRun) -> str:
        if not obj.finished_at:
            return "—"
        return display.ms(int((obj.finished_at - obj.created_at).total_seconds() * 1000))

    @admin.display(description="steps")
    def step_timings(self, obj: WorkflowRun) -> str:
        rows = [shapes.step_object(obj, s) for s in shapes.steps_of(obj)]
        return format_html(
            "<table><tr><th>stage</th><th>step</th><th>agent type</th><th>status</th><th>model</th>"
            "<th>task</th><th>queue wait</th><th>run</th></tr>{}</table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                (
                    (
                        r["stage"],
                        r["name"],
                        r["agent_type"],
                        r["status"],
                        r["model"] or "—",
                        display.short_id(r["task_id"]) if r["task_id"] else "—",
                        display.ms(r["queue_wait_ms"]),
                        display.ms(r["duration_ms"]),
                    )
                    for r in rows
                ),
            ),
        )


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _pair(a: int | None, b: int | None, unit: str = "") -> str:
    return "—" if a is None else f"{display.count(a)} / {display.count(b or 0)}{unit}"


@admin.register(ModelQualityWeek)
class ModelQualityWeekAdmin(display.ReadOnlyAdmin, admin.ModelAdmin):
    """Each model's figures per week and the drift verdicts of that week (apps/inference/quality.py):
    read-only, written by the hourly schedule and ``manage.py quality``. No PHI: counts, rates and
    percentiles of records whose content may be long purged."""

    list_display = [
        "model_name",
        "week_start",
        "requests_shown",
        "failure_rate_shown",
        "ratings",
        "rating_rate_shown",
        "refusal_rate_shown",
        "answer_length",
        "latency",
        "tokens",
        "drift_summary",
    ]
    list_filter = ["model_name"]
    date_hierarchy = "week_start"
    shown = (
        "model_name",
        "week_start",
        "requests_shown",
        "failure_rate_shown",
        "ratings",
        "rating_rate_shown",
        "reason_counts",
        "refusal_rate_shown",
        "answer_length",
        "latency",
        "tokens",
        "computed_at",
        "drift",
    )
    fields = shown
    readonly_fields = shown

    @admin.display(description="requests", ordering="requests")
    def requests_shown(self, obj: ModelQualityWeek) -> str:
        return display.count(obj.requests)

    @admin.display(description="failures")
    def failure_rate_shown(self, obj: ModelQualityWeek) -> str:
        return f"{_pct(obj.failure_rate)} ({display.count(obj.failures)})"

    @admin.display(description="ratings (up / down)")
    def ratings(self, obj: ModelQualityWeek) -> str:
        return f"{display.count(obj.ratings_up)} / {display.count(obj.ratings_down)}"

    @admin.display(description="thumbs up")
    def rating_rate_shown(self, obj: ModelQualityWeek) -> str:
        return _pct(obj.rating_rate)

    @admin.display(description="reasons")
    def reason_counts(self, obj: ModelQualityWeek) -> str:
        return ", ".join(f"{code}: {n}" for code, n in (obj.reasons or {}).items()) or "—"

    @admin.display(description="refusals")
    def refusal_rate_shown(self, obj: ModelQualityWeek) -> str:
        return f"{_pct(obj.refusal_rate)} of {display.count(obj.answers)}"

    @admin.display(description="answer chars p50 / p95")
    def answer_length(self, obj: ModelQualityWeek) -> str:
        return _pair(obj.answer_chars_p50, obj.answer_chars_p95)

    @admin.display(description="latency p50 / p95")
    def latency(self, obj: ModelQualityWeek) -> str:
        return _pair(obj.latency_p50_ms, obj.latency_p95_ms, " ms")

    @admin.display(description="tokens in → out")
    def tokens(self, obj: ModelQualityWeek) -> str:
        return f"{display.count(obj.prompt_tokens)} → {display.count(obj.completion_tokens)}"

    def _checks(self, obj: ModelQualityWeek) -> list[ModelDrift]:
        return list(ModelDrift.objects.filter(model_name=obj.model_name, week_start=obj.week_start))

    @admin.display(description="drift")
    def drift_summary(self, obj: ModelQualityWeek) -> str:
        checks = self._checks(obj)
        if not checks:
            return "not checked"
        flagged = [c.get_figure_display() for c in checks if c.drifted]
        return format_html("<strong>DRIFT</strong>: {}", ", ".join(flagged)) if flagged else "stable"

    @admin.display(description="drift against the baseline (the week's last check)")
    def drift(self, obj: ModelQualityWeek) -> str:
        """Per figure: the test, the baseline's and the window's values, the change, p, the verdict."""
        checks = self._checks(obj)
        if not checks:
            return "No drift check ran in this week."
        first = checks[0]
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    c.get_figure_display(),
                    c.test,
                    f"{c.n_baseline} → {c.n_window}",
                    "—" if c.effect is None else f"{c.effect:+.3g} (threshold {c.threshold:g})",
                    "—" if c.p_value is None else f"{c.p_value:.3g}",
                    "DRIFT" if c.drifted else "no",
                    c.verdict,
                )
                for c in checks
            ),
        )
        return format_html(
            "<p>Window {} to {} against the baseline from {} (alpha {}).</p>"
            '<table class="medai-drift"><thead><tr><th>figure</th><th>test</th><th>samples (baseline → window)</th>'
            "<th>change</th><th>p</th><th>drift</th><th>verdict</th></tr></thead><tbody>{}</tbody></table>",
            f"{first.window_start:%Y-%m-%d %H:%M}",
            f"{first.window_end:%Y-%m-%d %H:%M} UTC",
            f"{first.baseline_start:%Y-%m-%d %H:%M}",
            f"{first.alpha:g}",
            rows,
        )
