from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from apps.accounts import services
from apps.accounts.models import ALL_SCOPES, ApiKey, Location, Organization, User

if TYPE_CHECKING:
    from django.contrib.admin.options import _FieldGroups  # django-stubs' name for admin field lists


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "created_at"]
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

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        user, location = data.get("user"), data.get("location")
        if user and location and not user.locations.filter(pk=location.pk).exists():
            self.add_error("location", f"{user.username} does not work at {location.code}.")
        if user and data.get("scopes"):
            extra = set(data["scopes"]) - set(user.default_scopes)
            if extra:
                self.add_error("scopes", f"Not allowed for role {user.role}: {', '.join(sorted(extra))}.")
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
    actions = ["revoke_keys", "rotate_keys"]

    @admin.display(description="scopes")
    def scope_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes) or "(role default)"

    @admin.display(description="state")
    def state(self, obj: ApiKey) -> str:
        if obj.revoked_at:
            return "revoked"
        return "expired" if obj.is_expired else "active"

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

    @admin.action(description="Rotate selected keys (new secret, old one revoked)")
    def rotate_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset.filter(revoked_at__isnull=True).select_related("user", "location"):
            new_key, secret = services.rotate_api_key(key, actor=request.user)
            self._show_secret(request, new_key, secret)
