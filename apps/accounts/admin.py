from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from redis.exceptions import RedisError

from apps.accounts import breakglass, services
from apps.accounts.apikeys import ApiKeyError, check_scopes
from apps.accounts.governance import quotas
from apps.accounts.models import (
    ALL_SCOPES,
    ApiKey,
    ApiKeyLimit,
    BreakGlassGrant,
    Location,
    Organization,
    Quota,
    User,
)
from apps.audit import display

if TYPE_CHECKING:
    from django.contrib.admin.options import _FieldGroups  # django-stubs' name for admin field lists


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "quota_fail_open", "created_at"]
    search_fields = ["name"]


@admin.register(Location)
class LocationAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "organization", "is_active"]
    list_filter = ["organization", "is_active"]
    search_fields = ["code", "name"]


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ["username", "role", "organization", "is_active", "is_staff", "last_login"]
    list_filter = ["role", "organization", "is_active", "is_staff"]
    fieldsets = (*(DjangoUserAdmin.fieldsets or ()), ("medai", {"fields": ("role", "organization", "locations")}))
    add_fieldsets = DjangoUserAdmin.add_fieldsets + (("medai", {"fields": ("role", "organization", "locations")}),)
    filter_horizontal = ["locations", "groups", "user_permissions"]
    actions = ["end_sessions"]

    @admin.action(description="End all sessions of the selected users (their JWTs answer 401)")
    def end_sessions(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        for user in queryset:
            services.revoke_sessions(user, reason="ended by an admin", actor=request.user)
        self.message_user(request, f"Ended the sessions of {queryset.count()} user(s).")


class ApiKeyCreateForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=[(s, s) for s in ALL_SCOPES],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Empty: the role's default scopes.",
    )

    class Meta:
        model = ApiKey
        fields = ["user", "location", "name", "scopes", "expires_at"]
        help_texts = {"expires_at": "Empty: 90 days from now (MEDAI_API_KEY_TTL_DAYS)."}

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        user, location = data.get("user"), data.get("location")
        if user and location and not user.locations.filter(pk=location.pk).exists():
            self.add_error("location", f"{user.username} does not work at {location.code}.")
        if user and data.get("scopes"):
            try:
                check_scopes(user, list(data["scopes"]))
            except ApiKeyError as exc:
                self.add_error("scopes", str(exc))
        return data


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "user", "location", "scope_list", "state", "expires_at", "last_used_at"]
    list_filter = ["location", "revoked_at"]
    search_fields = ["name", "prefix", "user__username"]
    readonly_fields = [
        "prefix",
        "user",
        "location",
        "scopes",
        "created_at",
        "expires_at",
        "revoked_at",
        "last_used_at",
        "replaced_by",
    ]
    actions = ["revoke_keys", "rotate_keys", "rotate_keys_now"]

    @admin.display(description="scopes")
    def scope_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes) or "(role default)"

    @admin.display(description="state")
    def state(self, obj: ApiKey) -> str:
        return obj.state

    def get_form(
        self, request: HttpRequest, obj: ApiKey | None = None, change: bool = False, **kwargs: Any
    ) -> type[forms.ModelForm[ApiKey]]:
        if obj is None:
            kwargs["form"] = ApiKeyCreateForm
        return super().get_form(request, obj, change, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str] | tuple[str, ...]:
        return ["created_at"] if obj is None else self.readonly_fields

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> _FieldGroups:
        if obj is None:
            return ["user", "location", "name", "scopes", "expires_at"]
        return ["name", *self.readonly_fields]

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        key, secret = services.create_api_key(
            form.cleaned_data["user"],
            name=form.cleaned_data["name"],
            location=form.cleaned_data["location"],
            scopes=form.cleaned_data.get("scopes") or [],
            expires_at=form.cleaned_data.get("expires_at"),
            actor=request.user,
        )
        obj.pk = key.pk
        obj._state.adding = False
        self._show_secret(request, key, secret)

    def _show_secret(self, request: HttpRequest, key: ApiKey, secret: str) -> None:
        messages.warning(
            request,
            format_html(
                "API key <b>{}</b> created. Copy the secret now; it will not be shown again: <code>{}</code>",
                key.name,
                secret,
            ),
        )

    @admin.action(description="Revoke selected keys")
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset.select_related("location"):
            services.revoke_api_key(key, actor=request.user)
        self.message_user(request, f"Revoked {queryset.count()} key(s).")

    def _rotate(self, request: HttpRequest, queryset: QuerySet[ApiKey], grace_hours: float | None) -> None:
        for key in queryset.select_related("user", "location"):
            try:
                new_key, secret = services.rotate_api_key(key, actor=request.user, grace_hours=grace_hours)
            except ApiKeyError as exc:
                self.message_user(request, str(exc), messages.ERROR)
                continue
            self._show_secret(request, new_key, secret)
            key.refresh_from_db()
            until = "now" if key.revoked_at else f"until {key.expires_at:%Y-%m-%d %H:%M} UTC"
            self.message_user(request, f"The old secret of {key.prefix} works {until}.")

    @admin.action(description="Rotate selected keys (old secret works for the grace period)")
    def rotate_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        self._rotate(request, queryset, None)

    @admin.action(description="Rotate selected keys now (old secret revoked at once)")
    def rotate_keys_now(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        self._rotate(request, queryset, 0)


class BreakGlassGrantForm(forms.ModelForm):
    hours = forms.FloatField(
        min_value=0.25,
        max_value=BreakGlassGrant.MAX_HOURS,
        initial=4,
        help_text=f"How long the access lasts, from now (at most {BreakGlassGrant.MAX_HOURS} h).",
    )

    class Meta:
        model = BreakGlassGrant
        fields = ["user", "location", "reason"]

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if data.get("user") and data.get("location") and data.get("hours") is not None:
            try:
                data["reason"] = breakglass.check_grant(
                    data["user"], data["location"], data.get("reason", ""), data["hours"]
                )
            except breakglass.BreakGlassError as exc:
                self.add_error(None, str(exc))
        return data


@admin.register(BreakGlassGrant)
class BreakGlassGrantAdmin(admin.ModelAdmin):
    """Grants are made and ended here, never edited: the audit keeps what was granted and why."""

    list_display = ["id", "user", "location", "granted_by", "starts_at", "ends_at", "status"]
    list_filter = ["location"]
    search_fields = ["user__username", "reason"]
    actions = ["revoke_grants"]

    @admin.display(description="status")
    def status(self, obj: BreakGlassGrant) -> str:
        if obj.revoked_at:
            return "revoked"
        return "in force" if obj.in_force() else "ended"

    def get_form(
        self, request: HttpRequest, obj: BreakGlassGrant | None = None, change: bool = False, **kwargs: Any
    ) -> type[forms.ModelForm[BreakGlassGrant]]:
        if obj is None:
            kwargs["form"] = BreakGlassGrantForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: BreakGlassGrant | None = None) -> _FieldGroups:
        if obj is None:
            return ["user", "location", "reason", "hours"]
        return ["user", "location", "reason", "granted_by", "created_at", "starts_at", "ends_at", "revoked_at"]

    def get_readonly_fields(
        self, request: HttpRequest, obj: BreakGlassGrant | None = None
    ) -> list[str] | tuple[str, ...]:
        if obj is None:
            return []
        return ["user", "location", "reason", "granted_by", "created_at", "starts_at", "ends_at", "revoked_at"]

    def save_model(self, request: HttpRequest, obj: BreakGlassGrant, form: Any, change: bool) -> None:
        if change:
            return  # nothing is editable
        grant = breakglass.grant_break_glass(  # the form ran the same checks (check_grant)
            form.cleaned_data["user"],
            form.cleaned_data["location"],
            reason=form.cleaned_data["reason"],
            hours=form.cleaned_data["hours"],
            granted_by=request.user,
        )
        obj.pk = grant.pk
        obj._state.adding = False
        messages.warning(request, f"Break-glass access granted until {grant.ends_at:%Y-%m-%d %H:%M} UTC; alert raised.")

    def has_delete_permission(self, request: HttpRequest, obj: BreakGlassGrant | None = None) -> bool:
        return False

    @admin.action(description="End selected grants now")
    def revoke_grants(self, request: HttpRequest, queryset: QuerySet[BreakGlassGrant]) -> None:
        for grant in queryset.filter(revoked_at__isnull=True).select_related("user", "location"):
            breakglass.revoke_break_glass(grant, actor=request.user)
        self.message_user(request, "Grant(s) ended.")


# --- quotas and per-key rate limits (apps/accounts/governance/) ----------------------------------


def _used(quota: Quota) -> tuple[int, int] | None:
    try:
        return quotas.current_usage(quota)
    except RedisError:
        return None


def _of(used: int, limit: int | None) -> str:
    """ "1,430 (72 %)": what was used, and its share of the limit when there is one."""
    return f"{display.count(used)} ({display.percent(used / limit)})" if limit else display.count(used)


@admin.register(Quota)
class QuotaAdmin(admin.ModelAdmin):
    """Quotas per organization or location; the list shows what the current day or month used
    (held requests in flight included), read from the counters the request path keeps."""

    list_display = ["scope", "period", "max_requests", "max_tokens", "requests_used", "tokens_used", "updated_at"]
    list_filter = ["period", "organization", "location"]
    list_select_related = ["organization", "location"]
    fields = ["organization", "location", "period", "max_requests", "max_tokens", "usage"]
    readonly_fields = ["usage"]

    @admin.display(description="scope")
    def scope(self, obj: Quota) -> str:
        return obj.scope_name

    @admin.display(description="requests used")
    def requests_used(self, obj: Quota) -> str:
        used = _used(obj)
        return "unavailable" if used is None else _of(used[0], obj.max_requests)

    @admin.display(description="tokens used")
    def tokens_used(self, obj: Quota) -> str:
        used = _used(obj)
        return "unavailable" if used is None else _of(used[1], obj.max_tokens)

    @admin.display(description="used in the current window")
    def usage(self, obj: Quota) -> str:
        if obj.pk is None:
            return "-"
        used = _used(obj)
        if used is None:
            return "unavailable (the counter store cannot be reached)"
        return f"{used[0]} requests, {used[1]} tokens this {obj.period}"


@admin.register(ApiKeyLimit)
class ApiKeyLimitAdmin(admin.ModelAdmin):
    """A key's own rate limits; empty fields keep the defaults (MEDAI_RATE_LIMIT_KEY_*, MEDAI_INFLIGHT_PER_KEY)."""

    list_display = ["api_key", "rate", "burst", "max_in_flight"]
    search_fields = ["api_key__name", "api_key__prefix"]
    autocomplete_fields = ["api_key"]
