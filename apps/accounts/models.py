from __future__ import annotations

import hashlib
from datetime import datetime

from django.contrib.auth.models import AbstractUser
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

# Scopes an API key or token may carry. A role grants a default set (User.default_scopes); a key
# may narrow it, never widen it. The one check is apps/accounts/services.authorize.
SCOPE_CHAT = "chat"  # sync inference: chat completions (streamed or not), embeddings, completions
SCOPE_SUBMIT = "submit"  # async inference: submit, submit-batch, cancel
SCOPE_READ = "read"  # models, own tasks' status and results, the live status socket
SCOPE_GPU_READ = "gpu:read"  # GPU state: /v1/gpu/status and its socket
SCOPE_AUDIT_READ = "audit:read"  # the audit trail
ALL_SCOPES = (SCOPE_CHAT, SCOPE_SUBMIT, SCOPE_READ, SCOPE_GPU_READ, SCOPE_AUDIT_READ)


class Organization(models.Model):
    name = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    quota_fail_open = models.BooleanField(
        default=False,
        help_text=(
            "When the quota and rate-limit store (Redis) is unreachable: serve this organization's "
            "requests unmetered (checked) or refuse them with 503 (unchecked: the default, unless "
            "MEDAI_GOVERNANCE_FAIL_OPEN makes every organization fail open)."
        ),
    )

    def __str__(self) -> str:
        return self.name


class Location(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="locations")
    code = models.CharField(
        max_length=32,
        unique=True,
        validators=[RegexValidator(r"^[a-z0-9][a-z0-9_-]*$", "lowercase letters, digits, - and _")],
        help_text="Short id used at login, e.g. 'demo' or 'er-north'.",
    )
    name = models.CharField(max_length=200)
    is_active = models.BooleanField(default=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"


class User(AbstractUser):
    class Role(models.TextChoices):
        CLINICIAN = "clinician"
        INTEGRATOR = "integrator"
        AUDITOR = "auditor"
        ADMIN = "admin"

    role = models.CharField(max_length=16, choices=Role.choices, default=Role.CLINICIAN)
    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.PROTECT, related_name="users"
    )
    locations = models.ManyToManyField(
        Location, blank=True, related_name="users", help_text="Locations this user may log in to and work at."
    )

    # Bumped by a password change or a deactivation (apps/accounts/signals.py): every JWT carries
    # the generation it was issued under (claim ``gen``) and stops working when it moves on.
    token_generation = models.PositiveIntegerField(default=0, editable=False)

    # The user's active locations by code, and their break-glass grants in force by location code,
    # set on the copy the authentication cache keeps (apps/accounts/services.py): a token's
    # location is checked without a query.
    _location_map: dict[str, Location]
    _break_glass_map: dict[str, BreakGlassGrant]

    @property
    def default_scopes(self) -> list[str]:
        return list(ROLE_SCOPES[self.Role(self.role)])


ROLE_SCOPES: dict[str, tuple[str, ...]] = {
    User.Role.CLINICIAN: (SCOPE_CHAT, SCOPE_SUBMIT, SCOPE_READ, SCOPE_GPU_READ),
    User.Role.INTEGRATOR: (SCOPE_CHAT, SCOPE_SUBMIT, SCOPE_READ, SCOPE_GPU_READ),
    User.Role.AUDITOR: (SCOPE_READ, SCOPE_GPU_READ, SCOPE_AUDIT_READ),
    User.Role.ADMIN: ALL_SCOPES,
}


def hash_secret(secret: str) -> str:
    """API key secrets are 256-bit random strings, so a fast hash is enough (as GitHub tokens)."""
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def for_secret(self, secret: str) -> ApiKey | None:
        """The usable key for a presented secret, or None: unknown, revoked or expired, its user
        inactive, its location inactive, or its user no longer a member of its location."""
        key = (
            self.select_related("user", "location", "location__organization")
            .filter(hashed_secret=hash_secret(secret))
            .first()
        )
        if key is None or not key.is_usable:
            return None
        if not key.user.locations.filter(pk=key.location_id).exists():
            return None
        return key

    def by_prefix(self, prefix: str) -> ApiKey:
        """The key a prefix names (what admins and scripts see), ApiKey.DoesNotExist otherwise."""
        return self.select_related("user", "location").get(prefix=prefix.strip().rstrip("_").rstrip("…"))


class ApiKey(models.Model):
    """An API key: the secret is shown once at creation; only its prefix and hash are stored."""

    PREFIX = "mk_"

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_keys")
    location = models.ForeignKey(
        Location,
        on_delete=models.PROTECT,
        related_name="api_keys",
        help_text="Requests made with this key act at this location.",
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    hashed_secret = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    replaced_by = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replaces", editable=False
    )

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def is_usable(self) -> bool:
        """Checked on every use, cached copy included (membership: ``for_secret``, at load)."""
        return self.revoked_at is None and not self.is_expired and self.user.is_active and self.location.is_active

    @property
    def state(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.is_expired:
            return "expired"
        if self.replaced_by_id is not None:
            return "rotated (old secret in its grace period)"
        return "active"


class RevokedAccessToken(models.Model):
    """Access JWTs and sessions revoked by logout before they expire (simplejwt only blacklists
    refresh tokens). ``jti`` holds an access token's jti or a session id (claim ``sid``, the same
    on every token of one login, refreshes included): one row ends the whole session."""

    jti = models.CharField(max_length=64, unique=True)
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return self.jti


class Quota(models.Model):
    """A limit on requests and/or tokens per day or month, for an organization or one location.

    Enforced in Redis (apps/accounts/governance/); this row is the source of truth that
    ``governance.quotas.publish`` mirrors there after every change. Empty limit: unlimited."""

    class Period(models.TextChoices):
        DAY = "day"
        MONTH = "month"

    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.CASCADE, related_name="quotas"
    )
    location = models.ForeignKey(Location, null=True, blank=True, on_delete=models.CASCADE, related_name="quotas")
    period = models.CharField(max_length=8, choices=Period.choices)
    max_requests = models.PositiveBigIntegerField(null=True, blank=True, help_text="Empty: no request limit.")
    max_tokens = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Prompt plus completion tokens. Empty: no token limit."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(organization__isnull=False, location__isnull=True)
                    | models.Q(organization__isnull=True, location__isnull=False)
                ),
                name="quota_one_scope",
                violation_error_message="A quota is for an organization or for a location, not both.",
            ),
            models.UniqueConstraint(
                fields=["organization", "period"], condition=models.Q(location__isnull=True), name="quota_org_period"
            ),
            models.UniqueConstraint(
                fields=["location", "period"], condition=models.Q(organization__isnull=True), name="quota_loc_period"
            ),
        ]

    def __str__(self) -> str:
        parts = [
            f"{self.max_requests} requests" if self.max_requests is not None else "",
            f"{self.max_tokens} tokens" if self.max_tokens is not None else "",
        ]
        return f"{self.scope_name} per {self.period}: {', '.join(p for p in parts if p) or 'unlimited'}"

    @property
    def scope_name(self) -> str:
        if self.location is not None:
            return f"location '{self.location.code}'"
        return f"organization '{self.organization.name}'" if self.organization is not None else "?"


class ApiKeyLimit(models.Model):
    """A key's own rate limits, overriding the settings' defaults (MEDAI_RATE_LIMIT_KEY_*,
    MEDAI_INFLIGHT_PER_KEY). Empty: the default."""

    api_key = models.OneToOneField(ApiKey, on_delete=models.CASCADE, related_name="limit")
    rate = models.FloatField(null=True, blank=True, help_text="Requests per second refilled. Empty: the default.")
    burst = models.PositiveIntegerField(null=True, blank=True, help_text="Bucket size. Empty: the default.")
    max_in_flight = models.PositiveIntegerField(
        null=True, blank=True, help_text="Requests of this key at once. Empty: the default."
    )

    class Meta:
        verbose_name = "API key rate limit"

    def __str__(self) -> str:
        return f"limits of {self.api_key}"


class BreakGlassGrantQuerySet(models.QuerySet["BreakGlassGrant"]):
    def in_force(self, at: datetime | None = None) -> BreakGlassGrantQuerySet:
        """Grants whose window is open now (or ``at``), not revoked, at an active location."""
        at = at or timezone.now()
        return self.filter(revoked_at__isnull=True, starts_at__lte=at, ends_at__gt=at, location__is_active=True)


class BreakGlassGrant(models.Model):
    """Emergency access (HIPAA §164.312(a)(2)(ii)): a user may log in at a location they are not a
    member of, for a limited window, for a stated reason. Every action under it is marked in the
    audit; its start raises an alert (apps/accounts/breakglass.py)."""

    MAX_HOURS = 72

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="break_glass_grants")
    location = models.ForeignKey(Location, on_delete=models.PROTECT, related_name="break_glass_grants")
    reason = models.TextField(help_text="Why emergency access is needed (mandatory; it goes to the audit).")
    granted_by = models.ForeignKey(
        User, null=True, on_delete=models.SET_NULL, related_name="break_glass_granted", editable=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    starts_at = models.DateTimeField(default=timezone.now)
    ends_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = BreakGlassGrantQuerySet.as_manager()

    class Meta:
        verbose_name = "break-glass grant"
        constraints = [
            models.CheckConstraint(condition=models.Q(ends_at__gt=models.F("starts_at")), name="break_glass_window"),
            models.CheckConstraint(condition=~models.Q(reason=""), name="break_glass_reason_required"),
        ]

    def __str__(self) -> str:
        return f"break-glass #{self.pk}: {self.user} at {self.location.code}"

    def in_force(self, at: datetime | None = None) -> bool:
        at = at or timezone.now()
        return self.revoked_at is None and self.starts_at <= at < self.ends_at and self.location.is_active
