from __future__ import annotations

import hashlib

from django.contrib.auth.models import AbstractUser
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

# Scopes an API key or token may carry. A role grants a default set (Role.default_scopes).
SCOPE_INFERENCE = "inference"  # chat completions, embeddings, async submit
SCOPE_READ = "read"  # models, own tasks and results, GPU status
SCOPE_AUDIT = "audit"  # audit trail and metrics
ALL_SCOPES = (SCOPE_INFERENCE, SCOPE_READ, SCOPE_AUDIT)


class Organization(models.Model):
    name = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

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

    # The user's active locations by code, set on the copy the authentication cache keeps
    # (apps/accounts/services.py): a token's location is checked without a query.
    _location_map: dict[str, Location]

    @property
    def default_scopes(self) -> list[str]:
        return {
            self.Role.CLINICIAN: [SCOPE_INFERENCE, SCOPE_READ],
            self.Role.INTEGRATOR: [SCOPE_INFERENCE, SCOPE_READ],
            self.Role.AUDITOR: [SCOPE_READ, SCOPE_AUDIT],
            self.Role.ADMIN: list(ALL_SCOPES),
        }[self.Role(self.role)]


def hash_secret(secret: str) -> str:
    """API key secrets are 256-bit random strings, so a fast hash is enough (as GitHub tokens)."""
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def for_secret(self, secret: str) -> ApiKey | None:
        """The usable key for a presented secret, or None (unknown, revoked or expired)."""
        key = (
            self.select_related("user", "location", "location__organization")
            .filter(hashed_secret=hash_secret(secret))
            .first()
        )
        if key is None or not key.is_usable:
            return None
        return key


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
        return self.revoked_at is None and not self.is_expired and self.user.is_active


class RevokedAccessToken(models.Model):
    """Access JWTs revoked by logout before they expire (simplejwt only blacklists refresh tokens)."""

    jti = models.CharField(max_length=64, unique=True)
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return self.jti
